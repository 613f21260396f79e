"""Conformance: NVIDIA's own tritonclient (HTTP) checks health, reads metadata and infers against the local API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton

from catalog import load_catalog
from local.config import LocalConfig
from local.stack import LocalStack

CATALOG = load_catalog()


@pytest.fixture(scope="module")
def client(packages: dict[str, Path]) -> Iterator[triton.InferenceServerClient]:
    """A stack on free ports and a tritonclient pointed at its HTTP front, as a user would point it at Triton."""
    config = LocalConfig(api_port=0, aws_port=0, sagemaker_port=0, bucket="model-serving-triton-it", poll_wait_s=1)
    with LocalStack(config, packages) as stack:
        assert stack.front is not None
        connection = triton.InferenceServerClient(
            url=f"127.0.0.1:{stack.front.port}", connection_timeout=10.0, network_timeout=30.0
        )
        yield connection
        connection.close()


def test_server_and_models_report_live_and_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    for name in CATALOG.models:
        assert client.is_model_ready(name)
    assert not client.is_model_ready("no-such-model")


def test_metadata_names_the_api_tensors(client: triton.InferenceServerClient, packages: dict[str, Path]) -> None:
    import json

    for name, folder in packages.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        metadata = client.get_model_metadata(name)
        assert metadata["name"] == name
        assert manifest["version"] in metadata["versions"]
        assert {t["name"]: t["datatype"] for t in metadata["inputs"]} == {
            t["name"]: t["datatype"] for t in manifest["inputs"]
        }
        assert {t["name"]: t["datatype"] for t in metadata["outputs"]} == {
            t["name"]: t["datatype"] for t in manifest["outputs"]
        }


def test_infer_bytes_input_on_the_text_classifier(client: triton.InferenceServerClient) -> None:
    # given: text as a BYTES tensor of Python strings, the way Triton users send it
    texts = np.array(["what a fantastic launch", "this is the worst update ever"], dtype=np.object_)
    text = triton.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(texts, binary_data=False)
    outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("label", "probabilities")]
    # when
    result = client.infer("sentiment", inputs=[text], outputs=outputs, request_id="conformance-1")
    # then
    labels, probabilities = result.as_numpy("label"), result.as_numpy("probabilities")
    entry = CATALOG.model("sentiment")
    assert probabilities.shape == (2, len(entry.labels))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    decoded = [label.decode() if isinstance(label, bytes) else label for label in labels]
    assert decoded == [entry.labels[i] for i in probabilities.argmax(axis=1)]
    assert result.get_response()["id"] == "conformance-1"


def test_infer_fp32_input_on_the_digits_classifier(client: triton.InferenceServerClient) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[-16:].astype(np.float32)
    pixels = triton.InferInput("pixels", list(images.shape), "FP32")
    pixels.set_data_from_numpy(images, binary_data=False)
    result = client.infer(
        "digits", inputs=[pixels], outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)]
    )
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (16, 10)
    assert probabilities.dtype == np.float32
    assert (probabilities.argmax(axis=1) == digits.target[-16:]).mean() >= 0.5


def test_an_unknown_model_raises_the_clients_own_exception(client: triton.InferenceServerClient) -> None:
    from tritonclient.utils import InferenceServerException

    text = triton.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array(["hello"], dtype=np.object_), binary_data=False)
    # no route exists for a model the stack does not serve: API Gateway itself answers 404 {"message": "Not Found"}
    with pytest.raises(InferenceServerException, match=r"(?s)\[404\].*Not Found"):
        client.infer("no-such-model", inputs=[text])
