"""The HTTP front: each request becomes an API Gateway HTTP API payload format 2.0 event for the real handler."""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local.config import ACCOUNT_ID, HOST
from local.lambda_runtime import FunctionAlias, FunctionError, LocalFunction
from local.loopback import LoopbackServer
from stacks.routes import match_route

LAMBDA_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024  # synchronous invocation request and response limit
API_ID = "local"
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded", "+json", "+xml")
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"})

log = logging.getLogger("local.http")


def build_event(
    *,
    route_key: str = "$default",
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    server_port: int = 443,
    protocol: str = "HTTP/1.1",
    now: float | None = None,
) -> dict[str, Any]:
    """The payload format 2.0 event API Gateway would send for this request (headers lower-cased and comma-joined)."""
    now = time.time() if now is None else now
    url = urlsplit(target)
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key in ("connection", "keep-alive"):  # hop-by-hop: API Gateway does not pass them on
            continue
        if key == "cookie":  # HTTP APIs move cookies out of the headers into their own list
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    request_id = base64.b64encode(os.urandom(10)).decode()  # API Gateway's shape, e.g. "JKJaXmPLvHcESHA="
    merged.setdefault("x-forwarded-for", source_ip)
    merged.setdefault("x-forwarded-port", str(server_port))
    merged.setdefault("x-forwarded-proto", "http")
    merged.setdefault("x-amzn-trace-id", f"Root=1-{int(now):08x}-{uuid.uuid4().hex[:24]}")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": url.path or "/",
        "rawQueryString": url.query,
        "headers": merged,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": merged.get("host", HOST),
            "domainPrefix": merged.get("host", HOST).split(".")[0],
            "http": {
                "method": method,
                "path": url.path or "/",
                "protocol": protocol,
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if url.query:
        params: dict[str, str] = {}
        for key, value in parse_qsl(url.query, keep_blank_values=True):
            params[key] = f"{params[key]},{value}" if key in params else value
        event["queryStringParameters"] = params
    if body:
        content_type = merged.get("content-type", "").lower()
        if any(kind in content_type for kind in TEXT_TYPES):
            try:
                event["body"] = body.decode("utf-8")
            except UnicodeDecodeError:
                event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
        else:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    return event


def http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body from a handler's result, read the way HTTP APIs read payload format 2.0 responses."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # Format 2.0 treats anything else as a JSON body with status 200.
        return 200, [("content-type", "application/json")], json.dumps(result).encode()
    raw_body = result.get("body") or ""
    body = base64.b64decode(raw_body) if result.get("isBase64Encoded") else str(raw_body).encode("utf-8")
    headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items() if k.lower() not in HOP_BY_HOP]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        if name.lower() not in HOP_BY_HOP and not any(k.lower() == name.lower() for k, _ in headers):
            headers.extend((name, str(value)) for value in values)
    headers.extend(("set-cookie", cookie) for cookie in result.get("cookies") or [])
    return int(result["statusCode"]), headers, body


def _error(status: int, message: str, error: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """API Gateway's own error shape ({"message"}), plus the house {"error"} so clients need one code path."""
    return status, [("content-type", "application/json")], json.dumps({"message": message, "error": error}).encode()


class ApiFront(LoopbackServer):
    """A threading HTTP server on 127.0.0.1 standing in for the HTTP API in front of the API function."""

    def __init__(
        self,
        function: LocalFunction | FunctionAlias,
        port: int,
        *,
        route_keys: list[str],
        max_body_bytes: int = LAMBDA_PAYLOAD_LIMIT_BYTES,
    ) -> None:
        self.function = function
        self.route_keys = route_keys
        self.max_body_bytes = max_body_bytes
        super().__init__(_make_request_handler(self), port, name="local-api-front")

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request through the function, with the routes, limits and failure answers of API Gateway + Lambda."""
        route_key = match_route(self.route_keys, method, urlsplit(target).path or "/")
        if route_key is None:  # API Gateway answers itself; no function runs
            return 404, [("content-type", "application/json")], json.dumps({"message": "Not Found"}).encode()
        event = build_event(
            route_key=route_key,
            method=method,
            target=target,
            headers=headers,
            body=body,
            source_ip=source_ip,
            server_port=self.port,
        )
        if len(json.dumps(event)) > self.max_body_bytes:
            return _error(413, "Request Entity Too Large", "request over the 6 MB Lambda payload limit")
        try:
            result = self.function.invoke(event)
        except FunctionError as error:  # an unhandled error or a timeout: the HTTP API answers 500
            log.warning("%s; API Gateway answers 500", error)
            return _error(500, "Internal Server Error", "the function failed")
        status, response_headers, response_body = http_response(result)
        if len(response_body) > self.max_body_bytes:
            return _error(502, "Internal Server Error", "response over the 6 MB Lambda payload limit")
        response_headers.append(("apigw-requestid", event["requestContext"]["requestId"]))
        return status, response_headers, response_body


def _make_request_handler(front: ApiFront) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: tritonclient and boto3-style clients reuse connections
        server_version = "local-api-gateway"

        def _serve(self) -> None:
            try:
                length = int(self.headers.get("content-length") or 0)
            except ValueError:
                self.close_connection = True
                self._reply(*_error(400, "Bad Request", "Content-Length is not a number"))
                return
            if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                body = self._read_chunked(front.max_body_bytes + 1)
            elif length > front.max_body_bytes:
                self._drain(length)
                self._reply(*_error(413, "Request Entity Too Large", "request over the 6 MB Lambda payload limit"))
                return
            else:
                body = self.rfile.read(length) if length else b""
            if len(body) > front.max_body_bytes:
                self.close_connection = True
                self._reply(*_error(413, "Request Entity Too Large", "request over the 6 MB Lambda payload limit"))
                return
            started = time.perf_counter()
            status, headers, payload = front.handle(
                self.command, self.path, list(self.headers.items()), body, self.client_address[0]
            )
            log.info('"%s %s" %d %.1f ms', self.command, self.path, status, (time.perf_counter() - started) * 1000)
            self._reply(status, headers, payload)

        def _reply(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _drain(self, length: int) -> None:
            """Read and drop an oversized body (bounded) so the client gets the 413 rather than a reset."""
            remaining = min(length, 16 * front.max_body_bytes)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
            self.close_connection = True

        def _read_chunked(self, limit: int) -> bytes:
            parts: list[bytes] = []
            size = 0
            while size <= limit:
                line = self.rfile.readline(1024).strip()
                chunk_size = int(line.split(b";")[0] or b"0", 16)
                if chunk_size == 0:
                    self.rfile.readline(1024)
                    break
                parts.append(self.rfile.read(chunk_size))
                self.rfile.readline(1024)
                size += chunk_size
            return b"".join(parts)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """Malformed requests and unknown methods get API Gateway's JSON, not http.server's HTML page."""
            self.close_connection = True
            self._reply(
                *_error(code, message or HTTPStatus(code).phrase, explain or message or HTTPStatus(code).phrase)
            )

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve  # noqa: N815

    return RequestHandler
