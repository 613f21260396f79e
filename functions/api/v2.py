"""Open Inference Protocol v2 documents <-> the model: metadata, a checked batch, and the response body."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from functions.api.envelope import check_instance_count
from functions.runtime.models import Inference, ServedModel
from functions.runtime.package import TensorSpec
from functions.runtime.tensors import InferRequest, decode_inputs, encode_response

PLATFORM = "onnxruntime_onnx"


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """v2 model metadata response."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": spec.shape}


def model_metadata(model: ServedModel, versions: list[str]) -> dict[str, Any]:
    """The manifest's API-level tensors, as v2 metadata (what tritonclient.get_model_metadata reads), and the
    versions that can be asked for by path."""
    return {
        "name": model.name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [_tensor_metadata(spec) for spec in model.manifest.inputs],
        "outputs": [_tensor_metadata(spec) for spec in model.manifest.outputs],
    }


def v2_batch(model: ServedModel, request: InferRequest, max_instances: int) -> Any:
    """The request's one input, counted, decoded against the manifest and checked by the task: once, here."""
    for tensor in request.inputs:
        if tensor.shape:
            check_instance_count(model, tensor.shape[0], max_instances)
    return model.check_batch(decode_inputs(request, model.manifest.inputs)[model.input_name])


def v2_response(model: ServedModel, inference: Inference, outputs: list[str], request_id: str | None) -> dict[str, Any]:
    """The v2 response; `parameters.truncated` lists the texts cut at the model's max_length."""
    parameters = {"truncated": inference.truncated} if inference.truncated else None
    tensors = {name: inference.outputs[name] for name in outputs}
    return encode_response(model.name, model.version, tensors, request_id, parameters)
