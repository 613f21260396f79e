"""Both backends behind one interface: the ONNX session, and a SageMaker (Triton) endpoint spoken to in v2 JSON."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import onnxruntime as ort
import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from functions.runtime.endpoint import (
    ENDPOINT_ATTEMPTS,
    ENDPOINT_SHARE,
    RETRY_BACKOFF_S,
    SageMakerBackend,
    endpoint_client_config,
)
from functions.runtime.errors import BackendError, BackendTimeoutError
from functions.runtime.models import ServedModel, load_models
from functions.runtime.session import create_session
from functions.runtime.settings import Settings
from functions.runtime.tensors import decode_output, encode_output
from tests.unit.serving_fixtures import models_dir_for


def streaming(document: dict[str, Any]) -> StreamingBody:
    raw = json.dumps(document).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def model_error(message: str) -> ClientError:
    """What SageMaker raises when its container (Triton) answers an error: 424 ModelError."""
    return ClientError({"Error": {"Code": "ModelError", "Message": message}}, "InvokeEndpoint")


class TritonStandIn:
    """invoke_endpoint over a real ONNX session, reading and writing v2 JSON as Triton on SageMaker does, refusing a
    batch over its config's max_batch_size as Triton does; `down` makes every call fail, `delays_s` slows calls."""

    def __init__(self, graph: Path, max_batch: int = 64) -> None:
        self.session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        self.max_batch = max_batch
        self.requests: list[dict[str, Any]] = []
        self.batch_sizes: list[int] = []
        self.down = False
        self.delays_s: list[float] = []  # one per call, in arrival order; none: no delay
        self._lock = threading.Lock()

    def invoke_endpoint(self, **request: Any) -> dict[str, Any]:
        body = json.loads(request["Body"])
        feeds = {tensor["name"]: decode_output(tensor) for tensor in body["inputs"]}
        size = len(next(iter(feeds.values())))
        with self._lock:
            self.requests.append(request)
            self.batch_sizes.append(size)
            delay = self.delays_s.pop(0) if self.delays_s else 0.0
        if self.down:
            raise EndpointConnectionError(endpoint_url="https://runtime.sagemaker.us-east-1.amazonaws.com")
        if size > self.max_batch:
            raise model_error(f"inference request batch-size must be <= {self.max_batch} for 'embeddings'")
        time.sleep(delay)
        names = [output["name"] for output in body["outputs"]]
        results = self.session.run(names, feeds)
        return {"Body": streaming({"outputs": [encode_output(n, r) for n, r in zip(names, results, strict=True)]})}


def test_session_is_tuned_once(serving_packages: dict[str, Path]) -> None:
    session = create_session(serving_packages["digits"] / "model.onnx", intra_op_threads=2)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_sagemaker_backend_sends_v2_graph_tensors() -> None:
    # given a stubbed sagemaker-runtime client expecting the exact v2 request
    client = boto3.client("sagemaker-runtime", region_name="us-east-1")
    feeds = {
        "input_ids": np.array([[101, 7592, 102]], dtype=np.int64),
        "attention_mask": np.array([[1, 1, 1]], dtype=np.int64),
    }
    expected_body = {
        "inputs": [
            {"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [101, 7592, 102]},
            {"name": "attention_mask", "shape": [1, 3], "datatype": "INT64", "data": [1, 1, 1]},
        ],
        "outputs": [{"name": "logits"}],
    }
    answer = {
        "model_name": "sentiment",
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 3], "data": [0.1, 0.2, 0.7]}],
    }
    backend = SageMakerBackend(client, "sentiment-endpoint", ["logits"])
    with Stubber(client) as stub:
        stub.add_response(
            "invoke_endpoint",
            {"Body": streaming(answer), "ContentType": "application/json"},
            {
                "EndpointName": "sentiment-endpoint",
                "ContentType": "application/json",
                "Accept": "application/json",
                "Body": json.dumps(expected_body, separators=(",", ":")).encode(),
            },
        )
        # when
        outputs = backend.run(feeds)
        stub.assert_no_pending_responses()
    # then
    assert outputs["logits"].dtype == np.float32
    np.testing.assert_allclose(outputs["logits"], [[0.1, 0.2, 0.7]])


def test_sagemaker_errors_become_backend_errors() -> None:
    client = boto3.client("sagemaker-runtime", region_name="us-east-1")
    backend = SageMakerBackend(client, "gone", ["logits"])
    with Stubber(client) as stub:
        stub.add_client_error("invoke_endpoint", service_error_code="ValidationError", http_status_code=400)
        with pytest.raises(BackendError, match="endpoint gone failed"):
            backend.run({"input_ids": np.zeros((1, 2), dtype=np.int64)})


def test_sagemaker_backend_agrees_with_onnx(
    serving_packages: dict[str, Path], served_models: dict[str, ServedModel], tmp_path: Path
) -> None:
    # given the embeddings model served through an endpoint (SAGEMAKER_ENDPOINTS) and in-process
    stand_in = TritonStandIn(serving_packages["embeddings"] / "model.onnx")
    settings = Settings(
        models_dir=models_dir_for({"embeddings": serving_packages["embeddings"]}, tmp_path / "models"),
        sagemaker_endpoints={"embeddings": "embeddings-endpoint"},
    )
    remote = load_models(settings, sagemaker_client=stand_in)["embeddings"]
    texts = ["the same text", "served two ways, with different lengths"]
    # when
    via_endpoint = remote.predict(texts)["embedding"]
    # then pre/post-processing ran in the function and only graph tensors crossed the wire
    assert remote.backend.name == "sagemaker"
    np.testing.assert_allclose(via_endpoint, served_models["embeddings"].predict(texts)["embedding"], atol=1e-5)
    sent = json.loads(stand_in.requests[-1]["Body"])
    assert [tensor["name"] for tensor in sent["inputs"]] == ["input_ids", "attention_mask"]
    assert {tensor["datatype"] for tensor in sent["inputs"]} == {"INT64"}
    assert stand_in.requests[-1]["EndpointName"] == "embeddings-endpoint"


def endpoint_model(packages: dict[str, Path], root: Path, client: Any, **settings: Any) -> ServedModel:
    """The embeddings model served through an endpoint, as its front function loads it."""
    models_dir = models_dir_for({"embeddings": packages["embeddings"]}, root)
    options = {"sagemaker_endpoints": {"embeddings": "embeddings-endpoint"}, **settings}
    return load_models(Settings(models_dir=models_dir, **options), sagemaker_client=client)["embeddings"]


def test_a_batch_over_the_endpoints_max_batch_goes_as_chunks_in_order(
    serving_packages: dict[str, Path], served_models: dict[str, ServedModel], tmp_path: Path
) -> None:
    # given the catalog's 256 instances per request, and an endpoint whose Triton config says max_batch_size 64
    stand_in = TritonStandIn(serving_packages["embeddings"] / "model.onnx", max_batch=64)
    stand_in.delays_s = [0.4, 0.3, 0.2, 0.1]  # the first chunk answers last
    remote = endpoint_model(
        serving_packages,
        tmp_path / "models",
        stand_in,
        sagemaker_max_batch={"embeddings": 64},
        max_instances={"embeddings": 256},
    )
    texts = [f"sentence {index} " + "word " * (index % 7) for index in range(256)]
    # when
    started = time.perf_counter()
    via_endpoint = remote.predict(texts)["embedding"]
    elapsed = time.perf_counter() - started
    # then four calls of at most 64 went out, concurrently, and the answer is one local run's, in order
    assert sorted(stand_in.batch_sizes) == [64, 64, 64, 64]
    assert elapsed < 0.8  # one round, not the delays' 1 s sum
    np.testing.assert_allclose(via_endpoint, served_models["embeddings"].predict(texts)["embedding"], atol=1e-5)


def test_a_batch_within_the_max_batch_is_one_call(serving_packages: dict[str, Path], tmp_path: Path) -> None:
    stand_in = TritonStandIn(serving_packages["embeddings"] / "model.onnx", max_batch=4)
    remote = endpoint_model(serving_packages, tmp_path / "models", stand_in, sagemaker_max_batch={"embeddings": 4})
    remote.predict(["one", "two", "three", "four"])
    remote.predict(["one", "two", "three", "four", "five"])
    # then four texts are one call, five are two (as few as max_batch_size allows, cut by token length)
    assert stand_in.batch_sizes[0] == 4
    assert sorted(stand_in.batch_sizes[1:]) in ([1, 4], [2, 3])


@pytest.mark.parametrize("function_timeout_s", [3, 10, 25, 300])
def test_endpoint_calls_end_well_before_the_function_does(function_timeout_s: float) -> None:
    config = endpoint_client_config(function_timeout_s)
    worst_case_s = (config.connect_timeout + config.read_timeout) * ENDPOINT_ATTEMPTS + RETRY_BACKOFF_S
    assert config.retries == {"total_max_attempts": ENDPOINT_ATTEMPTS, "mode": "standard"}
    assert worst_case_s == pytest.approx(ENDPOINT_SHARE * function_timeout_s)
    assert worst_case_s < function_timeout_s
    assert 0 < config.connect_timeout <= 2


def test_the_client_the_function_builds_has_those_timeouts(serving_packages: dict[str, Path], tmp_path: Path) -> None:
    # given no client handed in: the Lambda entry point's case
    remote = endpoint_model(serving_packages, tmp_path / "models", None, function_timeout_s=10)
    # then the sagemaker-runtime client it built carries the timeouts sized for a 10 s function
    config = remote.backend.client.meta.config
    expected = endpoint_client_config(10)
    assert (config.connect_timeout, config.read_timeout) == (expected.connect_timeout, expected.read_timeout)
    assert config.retries["total_max_attempts"] == ENDPOINT_ATTEMPTS


class FailingClient:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def invoke_endpoint(self, **_: Any) -> dict[str, Any]:
        raise self.error


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ReadTimeoutError(endpoint_url="https://runtime"), BackendTimeoutError),
        (ConnectTimeoutError(endpoint_url="https://runtime"), BackendTimeoutError),
        (EndpointConnectionError(endpoint_url="https://runtime"), BackendError),
        (model_error("boom"), BackendError),
    ],
)
def test_endpoint_timeouts_are_told_from_endpoint_errors(error: Exception, kind: type[BackendError]) -> None:
    backend = SageMakerBackend(FailingClient(error), "embeddings-endpoint", ["sentence_embedding"])
    with pytest.raises(kind) as raised:
        backend.run({"input_ids": np.zeros((1, 2), dtype=np.int64)})
    assert (type(raised.value) is BackendTimeoutError) == (kind is BackendTimeoutError)


def test_a_body_that_is_not_utf8_json_is_a_backend_error() -> None:
    class Garbled:
        def invoke_endpoint(self, **_: Any) -> dict[str, Any]:
            return {"Body": StreamingBody(io.BytesIO(b"\xff\xfe"), 2)}

    with pytest.raises(BackendError, match="non-JSON"):
        SageMakerBackend(Garbled(), "e", ["x"]).run({"input_ids": np.zeros((1, 2), dtype=np.int64)})
