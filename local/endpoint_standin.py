"""SageMaker runtime's InvokeEndpoint path served locally, running v2 JSON tensors through the package's Triton graph.

The real GPU endpoint is Triton behind SageMaker; this stand-in loads the same `triton/model.tar.gz` the endpoint
would get and answers the way SageMaker wraps a model container, so the handler's SageMaker backend runs unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tarfile
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import onnxruntime as ort
from google.protobuf import text_format
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2

from functions.runtime.errors import InputError
from functions.runtime.package import PackageError, TensorSpec, load_package
from functions.runtime.session import create_session
from functions.runtime.tensors import InferRequest, decode_inputs, encode_response, requested_outputs
from local.config import ACCOUNT_ID, REGION
from local.loopback import LoopbackServer

INVOCATIONS_PATH = re.compile(r"^/endpoints/(?P<endpoint>[A-Za-z0-9-]{1,63})/invocations$")
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's request limit for real-time endpoints
INVOCATION_TIMEOUT_S = 60.0  # SageMaker stops waiting for the container after 60 s

log = logging.getLogger("local.sagemaker")


@dataclass
class EndpointModel:
    """One endpoint's single model, as Triton would load it from the model repository."""

    model_name: str
    version: str
    session: ort.InferenceSession
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: int  # from the packaged config.pbtxt; Triton refuses larger requests

    def infer(self, body: bytes) -> dict[str, Any]:
        """A v2 inference request in, a v2 response out; bad tensors raise InputError (Triton's 400)."""
        try:
            request = InferRequest.model_validate_json(body)
        except ValidationError as error:
            raise InputError(f"malformed v2 request: {error.errors()[0]['msg']}") from None
        feeds = decode_inputs(request, self.inputs)
        batch = max(len(feed) for feed in feeds.values())
        if batch > self.max_batch_size:
            raise InputError(f"inference request batch-size must be <= {self.max_batch_size} for '{self.model_name}'")
        wanted = requested_outputs(request, self.outputs)
        results = self.session.run(wanted, feeds)
        return encode_response(self.model_name, self.version, dict(zip(wanted, results, strict=True)), request.id)


def load_endpoint_model(package_dir: Path, work_dir: Path, intra_op_threads: int) -> EndpointModel:
    """The verified package's Triton repository (what the endpoint's model.tar.gz holds), config and graph."""
    package = load_package(package_dir)
    archive = package.path / "triton" / "model.tar.gz"
    if not archive.is_file():
        raise PackageError(f"{package_dir}: a SageMaker-placed model needs its Triton repository ({archive.name})")
    with tarfile.open(archive) as tar:
        tar.extractall(work_dir, filter="data")
    config_path = next(iter(sorted(work_dir.glob("*/config.pbtxt"))), None)
    if config_path is None:
        raise PackageError(f"{archive}: no <model>/config.pbtxt in the Triton repository")
    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    versions = sorted(config_path.parent.glob("*/model.onnx"))
    graph = versions[-1] if versions else package.graph_path
    model_name = config.name or config_path.parent.name
    return EndpointModel(
        model_name=model_name,
        version="1",
        session=create_session(graph, intra_op_threads),
        inputs=list(package.manifest.graph.inputs),
        outputs=list(package.manifest.graph.outputs),
        max_batch_size=config.max_batch_size,
    )


class EndpointStandIn(LoopbackServer):
    """A local HTTP server answering POST /endpoints/<name>/invocations like SageMaker runtime does."""

    def __init__(self, endpoints: dict[str, Path], port: int, *, intra_op_threads: int | None = None) -> None:
        self._work = tempfile.TemporaryDirectory(prefix="local-sagemaker-")
        self._threads = intra_op_threads or max(1, len(os.sched_getaffinity(0)))
        self.models = {
            endpoint: load_endpoint_model(package, Path(self._work.name) / endpoint, self._threads)
            for endpoint, package in endpoints.items()
        }
        self.invocations: Counter[str] = Counter()
        self._lock = threading.Lock()
        super().__init__(_make_request_handler(self), port, name="local-sagemaker")

    def deploy(self, endpoint: str, package: Path) -> None:
        """An endpoint update, blue/green: the new model loads beside the old one, then takes all the traffic."""
        work = Path(self._work.name) / f"{endpoint}-{time.time_ns()}"
        self.models = {**self.models, endpoint: load_endpoint_model(package, work, self._threads)}

    def stop(self) -> None:
        super().stop()
        self._work.cleanup()

    def invoke(self, endpoint: str, body: bytes, content_type: str) -> tuple[int, dict[str, str], bytes]:
        """SageMaker's answers: the model's body on success, ValidationError for no endpoint, ModelError otherwise."""
        model = self.models.get(endpoint)
        if model is None:
            message = f"Endpoint {endpoint} of account {ACCOUNT_ID} not found."
            return _aws_error(400, "ValidationError", message)
        with self._lock:
            self.invocations[endpoint] += 1
        if not content_type.startswith("application/json"):
            message = f"content type {content_type!r}: Triton's JSON path takes application/json"
            return _model_error(endpoint, 400, message)
        started = time.monotonic()
        try:
            document = model.infer(body)
        except InputError as error:
            return _model_error(endpoint, 400, str(error))
        except Exception as error:  # onnxruntime's own error types
            log.exception("endpoint %s: inference failed", endpoint)
            return _model_error(endpoint, 500, f"inference failed: {error}")
        if time.monotonic() - started > INVOCATION_TIMEOUT_S:
            message = "Your invocation timed out while waiting for a response from container primary."
            return _model_error(endpoint, 408, message)
        headers = {"Content-Type": "application/json", "x-Amzn-Invoked-Production-Variant": "AllTraffic"}
        return 200, headers, json.dumps(document, separators=(",", ":")).encode()


def _aws_error(status: int, code: str, message: str, **extra: Any) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"message": message, **extra}).encode()
    return status, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}, body


def _model_error(endpoint: str, status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    """The container said no: SageMaker answers 424 ModelError carrying the container's status and message."""
    original = json.dumps({"error": message})
    return _aws_error(
        424,
        "ModelError",
        f'Received client error ({status}) from primary with message "{original}"',
        OriginalStatusCode=status,
        OriginalMessage=original,
        LogStreamArn=f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/{endpoint}",
    )


def _make_request_handler(standin: EndpointStandIn) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            match = INVOCATIONS_PATH.match(self.path.split("?")[0])
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_PAYLOAD_BYTES:
                self.close_connection = True
                self._reply(*_aws_error(413, "ValidationError", "Request payload over the 6 MB limit"))
                return
            body = self.rfile.read(length) if length else b""
            if match is None:
                self._reply(*_aws_error(404, "UnknownOperationException", f"no operation at {self.path}"))
                return
            content_type = self.headers.get("content-type") or "application/octet-stream"
            self._reply(*standin.invoke(match["endpoint"], body, content_type))

        def do_GET(self) -> None:
            """Only the container's /ping: SageMaker runtime itself has no GET operations."""
            if self.path == "/ping":
                self._reply(200, {"Content-Type": "application/json"}, b"{}")
            else:
                self._reply(*_aws_error(404, "UnknownOperationException", f"no operation at {self.path}"))

        def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return RequestHandler
