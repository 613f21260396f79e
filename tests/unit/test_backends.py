"""Both backends behind one interface: the ONNX session, and a SageMaker (Triton) endpoint spoken to in v2 JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import onnxruntime as ort
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from functions.runtime.tensors import decode_output, encode_output

from functions.runtime.backends import SageMakerBackend
from functions.runtime.errors import BackendError
from functions.runtime.models import ServedModel, load_models
from functions.runtime.session import create_session
from functions.runtime.settings import Settings
from tests.unit.serving_fixtures import models_dir_for


def streaming(document: dict[str, Any]) -> StreamingBody:
    raw = json.dumps(document).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


class TritonStandIn:
    """invoke_endpoint over a real ONNX session, reading and writing v2 JSON as Triton on SageMaker does."""

    def __init__(self, graph: Path) -> None:
        self.session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        self.requests: list[dict[str, Any]] = []

    def invoke_endpoint(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        body = json.loads(request["Body"])
        feeds = {tensor["name"]: decode_output(tensor) for tensor in body["inputs"]}
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
