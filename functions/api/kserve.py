"""KServe v1 and Open Inference Protocol v2 documents <-> the runtime's API-level tensors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from functions.runtime.errors import InputError
from functions.runtime.models import Inference, ServedModel
from functions.runtime.package import TensorSpec
from functions.runtime.protocol import InferRequest, decode_input, encode_output

PLATFORM = "onnxruntime_onnx"


class PredictRequest(BaseModel):
    """KServe v1 / TF-Serving `:predict` body."""

    instances: list[Any] = Field(min_length=1)


class PredictResponse(BaseModel):
    """KServe v1 answer: per instance {label, score, scores} for classifiers, a vector for embeddings."""

    predictions: list[Any]


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


def model_metadata(model: ServedModel) -> dict[str, Any]:
    """The manifest's API-level tensors, as v2 metadata (what tritonclient.get_model_metadata reads)."""
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": PLATFORM,
        "inputs": [_tensor_metadata(spec) for spec in model.manifest.inputs],
        "outputs": [_tensor_metadata(spec) for spec in model.manifest.outputs],
    }


def v2_inputs(model: ServedModel, request: InferRequest) -> dict[str, Any]:
    """Each request tensor checked against the manifest input of the same name."""
    specs = {spec.name: spec for spec in model.manifest.inputs}
    inputs: dict[str, Any] = {}
    for tensor in request.inputs:
        if tensor.shape:
            model.check_batch_size(tensor.shape[0])
        spec = specs.get(tensor.name)
        if spec is None:
            raise InputError(f"unknown input {tensor.name!r}; model {model.name} takes {', '.join(specs)}")
        if tensor.name in inputs:
            raise InputError(f"input {tensor.name!r} given twice")
        inputs[tensor.name] = decode_input(tensor, spec)
    return inputs


def requested_outputs(model: ServedModel, request: InferRequest) -> list[str]:
    """The outputs the caller asked for (all by default), or an InputError naming an unknown one."""
    known = [spec.name for spec in model.manifest.outputs]
    if not request.outputs:
        return known
    names = [output.name for output in request.outputs]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InputError(
            f"unknown output(s) {', '.join(map(repr, unknown))}; model {model.name} has {', '.join(known)}"
        )
    return names


def v2_response(model: ServedModel, inference: Inference, outputs: list[str], request_id: str | None) -> dict[str, Any]:
    """The v2 response; `parameters.truncated` lists the texts cut at the model's max_length."""
    body: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request_id is not None:
        body["id"] = request_id
    if inference.truncated:
        body["parameters"] = {"truncated": inference.truncated}
    body["outputs"] = [encode_output(name, inference.outputs[name]) for name in outputs]
    return body


def v1_inputs(model: ServedModel, request: PredictRequest) -> dict[str, Any]:
    """Instances checked one by one, so the error names the first bad instance."""
    model.check_batch_size(len(request.instances))
    instances = []
    for index, instance in enumerate(request.instances):
        try:
            instances.append(model.processor.check_instance(instance))
        except InputError as error:
            raise InputError(f"instance {index}: {error}") from None
    return model.processor.stack(instances)
