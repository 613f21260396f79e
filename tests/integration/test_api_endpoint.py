"""The GPU front: the API over a model served by a SageMaker endpoint (issue 9, findings 5-7). A slow endpoint is a
504 with a JSON body before the function's timeout, a failing one a 502; readiness asks the endpoint; every 4xx and
5xx answered is counted in a metric the stacks alarm on."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from functions.api.app import ApiFunction, create_api
from functions.runtime import models as served
from functions.runtime.models import load_models
from functions.runtime.settings import Settings
from tests.integration.test_api_handler import Call, api_caller, assert_client_error, text_request
from tests.unit.serving_fixtures import models_dir_for
from tests.unit.test_backends import TritonStandIn

INFER = "/v2/models/embeddings/infer"
READY = "/v2/models/embeddings/ready"


def front(packages: dict[str, Path], root: Path, client: Any, **changes: Any) -> ApiFunction:
    """The embeddings front function as the stacks configure it, over `client` (None: the one it builds itself)."""
    settings = Settings(
        models_dir=models_dir_for({"embeddings": packages["embeddings"]}, root),
        sagemaker_endpoints={"embeddings": "embeddings-endpoint"},
        sagemaker_max_batch={"embeddings": 64},
        max_instances={"embeddings": 256},
        service_name="front-tests",
        **changes,
    )
    return create_api(settings, load_models(settings, sagemaker_client=client))


@pytest.fixture
def stand_in(serving_packages: dict[str, Path]) -> TritonStandIn:
    return TritonStandIn(serving_packages["embeddings"] / "model.onnx")


@pytest.fixture
def call_front(
    serving_packages: dict[str, Path],
    stand_in: TritonStandIn,
    tmp_path: Path,
    load_event: Callable,
    lambda_context: Any,
) -> Call:
    function = front(serving_packages, tmp_path / "models", stand_in)
    return api_caller(function, load_event("apigw_v2_health_ready"), lambda_context)


# --- timeouts and endpoint errors ----------------------------------------------------------------------------------


class SlowEndpoint(ThreadingHTTPServer):
    """InvokeEndpoint that answers correctly, but only after `delay_s`."""

    daemon_threads = True

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls = 0
        super().__init__(("127.0.0.1", 0), _slow_handler(self))


def _slow_handler(server: SlowEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            server.calls += 1
            request = json.loads(self.rfile.read(int(self.headers["content-length"])))
            rows = request["inputs"][0]["shape"][0]
            time.sleep(server.delay_s)
            answer = {"outputs": [{"name": "sentence_embedding", "datatype": "FP32", "shape": [rows, 384]}]}
            answer["outputs"][0]["data"] = [0.05] * (rows * 384)
            body = json.dumps(answer).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should

        def log_message(self, *_: Any) -> None: ...

    return Handler


@pytest.fixture
def slow_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowEndpoint]:
    server = SlowEndpoint(delay_s=5.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # the client the function builds itself finds its endpoint here (botocore's per-service endpoint variable)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{server.server_address[1]}")
    yield server
    server.shutdown()
    server.server_close()


def test_a_slow_endpoint_is_a_504_before_the_function_times_out(
    serving_packages: dict[str, Path],
    slow_endpoint: SlowEndpoint,
    tmp_path: Path,
    load_event: Callable,
    lambda_context: Any,
) -> None:
    # given a 3 s function whose endpoint takes 5 s, over the client the function builds for itself
    function = front(serving_packages, tmp_path / "models", None, function_timeout_s=3)
    call = api_caller(function, load_event("apigw_v2_health_ready"), lambda_context)
    # when
    started = time.monotonic()
    status, body, _ = call("POST", INFER, text_request("waiting"))
    elapsed = time.monotonic() - started
    # then every attempt timed out and the caller got a JSON 504 with time to spare
    assert_client_error(status, body, 504, "did not answer in time")
    assert elapsed < 3 * 0.8 + 0.5
    assert slow_endpoint.calls == 2


def test_a_failing_endpoint_is_a_502_without_internals(call_front: Call, stand_in: TritonStandIn) -> None:
    stand_in.down = True
    status, body, _ = call_front("POST", INFER, text_request("a"))
    assert status == 502
    assert body == {"error": "the model backend failed; see the function logs"}


def test_256_instances_are_answered_through_an_endpoint_that_takes_64(
    call_front: Call, stand_in: TritonStandIn
) -> None:
    status, body, _ = call_front("POST", INFER, text_request(*[f"text {index}" for index in range(256)]))
    assert status == 200
    assert body["outputs"][0]["shape"] == [256, 384]
    assert sorted(stand_in.batch_sizes) == [64] * 4


# --- readiness -------------------------------------------------------------------------------------------------------


def test_readiness_asks_the_endpoint(
    call_front: Call, stand_in: TritonStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(served, "monotonic", lambda: now[0])
    # given an endpoint that is down
    stand_in.down = True
    # when readiness is asked, then every route says not ready, and the answer is cached (one probe)
    assert call_front("GET", READY)[:2] == (503, {"name": "embeddings", "ready": False})
    assert call_front("GET", "/v2/health/ready")[:2] == (503, {"ready": False})
    assert call_front("GET", "/v1/models/embeddings")[1] == {"name": "embeddings", "ready": False}
    assert len(stand_in.requests) == 1
    # when the endpoint is back and the failure has gone stale
    stand_in.down = False
    now[0] += served.NOT_READY_TTL_S
    # then one more probe finds it ready, and that answer stands for READY_TTL_S
    assert call_front("GET", READY)[:2] == (200, {"name": "embeddings", "ready": True})
    now[0] += served.READY_TTL_S - 1
    assert call_front("GET", "/v2/health/ready")[:2] == (200, {"ready": True})
    assert len(stand_in.requests) == 2
    now[0] += 1
    assert call_front("GET", READY)[0] == 200
    assert len(stand_in.requests) == 3


def test_a_scored_request_counts_as_a_ready_endpoint(call_front: Call, stand_in: TritonStandIn) -> None:
    assert call_front("POST", INFER, text_request("hello"))[0] == 200
    assert call_front("GET", READY)[0] == 200
    assert len(stand_in.requests) == 1  # no probe: the request just answered was the proof


# --- error metrics ---------------------------------------------------------------------------------------------------


def error_metrics(output: str) -> list[dict[str, Any]]:
    """The EMF documents carrying ServerErrors or ClientErrors in captured stdout."""
    documents = [json.loads(line) for line in output.splitlines() if line.startswith('{"_aws"')]
    return [document for document in documents if "ServerErrors" in document or "ClientErrors" in document]


@pytest.mark.parametrize(
    ("method", "path", "body", "metric", "dimensions"),
    [
        ("POST", INFER, text_request("a"), "ServerErrors", [["service", "model"], ["service"]]),
        ("GET", READY, None, "ServerErrors", [["service", "model"], ["service"]]),
        ("POST", INFER, {"inputs": []}, "ClientErrors", [["service", "model"], ["service"]]),
        ("POST", "/v1/models/embeddings:predict", "{", "ClientErrors", [["service", "model"], ["service"]]),
        ("POST", "/v2/models/nope/infer", text_request("a"), "ClientErrors", [["service"]]),
        ("GET", "/v3/anything", None, "ClientErrors", [["service"]]),
    ],
    ids=["endpoint-down", "not-ready", "invalid", "malformed", "unknown-model", "unknown-route"],
)
def test_every_error_answered_is_counted(
    call_front: Call,
    stand_in: TritonStandIn,
    capsys: pytest.CaptureFixture[str],
    method: str,
    path: str,
    body: Any,
    metric: str,
    dimensions: list[list[str]],
) -> None:
    # given an endpoint that is down (for the 5xx cases)
    stand_in.down = True
    capsys.readouterr()
    # when
    status = call_front(method, path, raw=body) if isinstance(body, str) else call_front(method, path, body)
    # then one document counts the answer, with the model when the path names a served one
    (document,) = error_metrics(capsys.readouterr().out)
    assert status[0] >= (500 if metric == "ServerErrors" else 400)
    assert document[metric] == [1.0]
    assert [set(names) for names in document["_aws"]["CloudWatchMetrics"][0]["Dimensions"]] == [
        set(names) for names in dimensions
    ]
    assert document["service"] == "front-tests"
    assert document.get("model") == ("embeddings" if len(dimensions) == 2 else None)


def test_success_counts_no_error(call_front: Call, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert call_front("POST", INFER, text_request("fine"))[0] == 200
    assert error_metrics(capsys.readouterr().out) == []
