"""Checks on the HTTP envelope (size, content type, instance count) that answer before the body is decoded, and the
size of the answer, which must fit Lambda's response payload limit once wrapped in the proxy response."""

from __future__ import annotations

import json

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from functions.runtime.errors import TooManyInstancesError
from functions.runtime.models import ServedModel


class EnvelopeError(Exception):
    """A request the API refuses for its envelope, not its content."""


class PayloadTooLargeError(EnvelopeError):
    """Body over the Lambda synchronous payload limit."""


class UnsupportedMediaTypeError(EnvelopeError):
    """A body that is not JSON (or uses the Triton binary-tensor extension)."""


class ResponseTooLargeError(EnvelopeError):
    """The answer would not fit Lambda's response limit: Lambda would fail the invocation and the caller get a 502."""


class MethodNotAllowedError(EnvelopeError):
    """The path exists, the method does not."""

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.allowed = allowed


JSON_CONTENT_TYPES = ("application/json",)
# statusCode, headers, isBase64Encoded and the keys around the body in the proxy response Lambda serialises
RESPONSE_ENVELOPE_BYTES = 1024
BINARY_HEADER = "inference-header-content-length"


def body_size(event: APIGatewayProxyEventV2) -> int:
    """Size of the body as received (base64 bodies decode to about 3/4 of their text)."""
    body = event.body or ""
    return len(body) * 3 // 4 if event.is_base64_encoded else len(body.encode())


def check_envelope(event: APIGatewayProxyEventV2, max_body_bytes: int) -> None:
    """Raise the envelope error of a request body, if any (only bodies are checked: GETs have none)."""
    if not event.body:
        return
    size = body_size(event)
    if size > max_body_bytes:
        raise PayloadTooLargeError(f"request body is {size} bytes; the limit is {max_body_bytes} bytes")
    # The raw dict: payload 2.0 already lower-cases names, and the case-insensitive view is rebuilt on each access.
    headers = {name.lower(): value for name, value in (event.raw_event.get("headers") or {}).items()}
    if BINARY_HEADER in headers:
        raise UnsupportedMediaTypeError(
            "the binary tensor data extension is not supported; send JSON tensors (tritonclient: binary_data=False)"
        )
    content_type = headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type and media_type not in JSON_CONTENT_TYPES:
        raise UnsupportedMediaTypeError(f"content type {media_type!r} is not supported; send application/json")


def check_instance_count(model: ServedModel, count: int, max_instances: int) -> None:
    """The HTTP API's per-request limit, checked before anything is decoded; batch files chunk by their own setting."""
    if count > max_instances:
        raise TooManyInstancesError(
            f"{count} instances in one request; model {model.name} accepts at most {max_instances}"
        )


def wrapped_size(body: str) -> int:
    """Bytes of the proxy response Lambda serialises around `body`: embedded as a JSON string, an ASCII body grows by
    one byte per quote and backslash; a body with other characters (orjson writes them as they are) is measured as
    json.dumps escapes it, \\uXXXX each."""
    if not body.isascii():
        return len(json.dumps(body)) - 2 + RESPONSE_ENVELOPE_BYTES
    return len(body) + body.count('"') + body.count("\\") + RESPONSE_ENVELOPE_BYTES


def check_response_size(body: str, max_response_bytes: int) -> None:
    """Refuse an answer Lambda could not return, with a message saying how to get one it can."""
    size = wrapped_size(body)
    if size > max_response_bytes:
        raise ResponseTooLargeError(
            f"the response would be {size} bytes; the limit is {max_response_bytes} bytes "
            "(Lambda's response payload limit): send fewer instances or request fewer outputs"
        )
