"""The one Open Inference Protocol v2 codec (KServe / Triton): JSON documents <-> numpy tensors.

The API, the SageMaker backend (towards Triton) and the local endpoint stand-in all decode and encode through here,
so a request is validated against the declared tensors once, at the edge.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from functions.runtime.errors import InputError
from functions.runtime.package import TensorSpec

NUMPY_DTYPES: dict[str, type] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
# A model has a handful of outputs: a longer `outputs` list is refused by the schema (repeats are answered once).
MAX_REQUESTED_OUTPUTS = 64
V2_DATATYPES: dict[np.dtype, str] = {np.dtype(dtype): name for name, dtype in NUMPY_DTYPES.items() if name != "BYTES"}


class RequestInput(BaseModel):
    """One input tensor of a v2 inference request."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]

    def __repr_args__(self) -> Any:
        """Without the data: Powertools formats the route's arguments into a debug line on every request (whether
        debug logging is on or not), and a repr of every pixel or text cost more than the rest of the request."""
        yield from ((name, value) for name, value in super().__repr_args__() if name != "data")
        yield "data", f"<{len(self.data)} items>"


class RequestOutput(BaseModel):
    """An output the caller asks for (v2 `outputs`); the default is every output."""

    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """The v2 inference request body."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = Field(default=None, max_length=MAX_REQUESTED_OUTPUTS)

    @field_validator("id")
    @classmethod
    def _unicode_id(cls, value: str | None) -> str | None:
        """The answer echoes the id, and no UTF-8 writer can write a lone surrogate (a "\\ud800" escape parses)."""
        if value is not None:
            try:
                value.encode()
            except UnicodeEncodeError as error:
                where = error.start
                raise ValueError(f"holds a lone surrogate {value[where]!r} at {where}: not Unicode text") from None
        return value


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferResponse(BaseModel):
    """The v2 inference response body (`id` and `parameters` only when there is something to say)."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


def _flatten(data: list[Any], rank: int) -> list[Any]:
    """Row-major flattening (the spec allows nested arrays as well as flat data), never deeper than the tensor's rank:
    deeper nesting is a ValueError, not a recursion as deep as the caller cares to nest."""
    if not any(isinstance(item, list) for item in data):
        return data
    if rank <= 1:
        raise ValueError("data is nested deeper than its shape")
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item, rank - 1) if isinstance(item, list) else [item])
    return flat


def decode_input(tensor: RequestInput, spec: TensorSpec) -> Any:
    """Check a request tensor against the model's declared input; BYTES stay a list of str, numbers become numpy."""
    if tensor.datatype != spec.datatype:
        raise InputError(f"input {tensor.name!r}: datatype {tensor.datatype}, expected {spec.datatype}")
    if len(tensor.shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, tensor.shape, strict=True)
    ):
        raise InputError(f"input {tensor.name!r}: shape {tensor.shape} does not match {spec.shape}")
    if any(dim < 0 for dim in tensor.shape):
        raise InputError(f"input {tensor.name!r}: shape {tensor.shape} has a negative dimension")
    if tensor.shape[0] == 0:
        raise InputError(f"input {tensor.name!r}: no instances (shape {tensor.shape})")
    try:
        data = _flatten(tensor.data, len(tensor.shape))
    except ValueError as error:
        raise InputError(f"input {tensor.name!r}: {error} {tensor.shape}") from None
    if len(data) != math.prod(tensor.shape):
        raise InputError(
            f"input {tensor.name!r}: shape {tensor.shape} needs {math.prod(tensor.shape)} values, got {len(data)}"
        )
    if spec.datatype == "BYTES":
        if not all(isinstance(item, str) for item in data):
            raise InputError(f"input {tensor.name!r}: BYTES data must be strings")
        return data
    if not all(isinstance(item, int | float) and not isinstance(item, bool) for item in data):
        raise InputError(f"input {tensor.name!r}: {spec.datatype} data must be numbers")
    try:
        with np.errstate(over="ignore"):  # floats beyond FP32 become inf; the task says what range it takes
            return np.asarray(data, dtype=NUMPY_DTYPES[spec.datatype]).reshape(tensor.shape)
    except OverflowError:
        raise InputError(f"input {tensor.name!r}: a value is out of range for {spec.datatype}") from None


def encode_output(name: str, array: np.ndarray) -> dict[str, Any]:
    """A numpy array as a v2 response tensor: flat row-major data, BYTES for strings."""
    datatype = "BYTES" if array.dtype == np.object_ or array.dtype.kind in "US" else V2_DATATYPES[array.dtype]
    data = array.ravel().tolist()
    if datatype == "BYTES":
        data = [str(item) for item in data]
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


def decode_output(tensor: dict[str, Any]) -> np.ndarray:
    """A v2 response tensor (from Triton) as a numpy array of its declared datatype and shape."""
    try:
        dtype = NUMPY_DTYPES[tensor["datatype"]]
        return np.asarray(_flatten(tensor["data"], len(tensor["shape"])), dtype=dtype).reshape(tensor["shape"])
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"not a v2 output tensor: {error}") from None


def decode_inputs(request: InferRequest, specs: Sequence[TensorSpec]) -> dict[str, Any]:
    """Every declared input, each checked against its spec; unknown, repeated or missing inputs are InputErrors."""
    by_name = {spec.name: spec for spec in specs}
    decoded: dict[str, Any] = {}
    for tensor in request.inputs:
        spec = by_name.get(tensor.name)
        if spec is None:
            raise InputError(f"unknown input {tensor.name!r}; the model takes {', '.join(map(repr, by_name))}")
        if tensor.name in decoded:
            raise InputError(f"input {tensor.name!r} given twice")
        decoded[tensor.name] = decode_input(tensor, spec)
    missing = [name for name in by_name if name not in decoded]
    if missing:
        raise InputError(f"missing input {', '.join(map(repr, missing))}")
    return decoded


def requested_outputs(request: InferRequest, specs: Sequence[TensorSpec]) -> list[str]:
    """The outputs the caller asked for, each once (every declared output by default), or an InputError naming an
    unknown one."""
    known = [spec.name for spec in specs]
    if not request.outputs:
        return known
    names = list(dict.fromkeys(output.name for output in request.outputs))  # each once, in the order asked
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InputError(f"unknown output(s) {', '.join(map(repr, unknown))}; the model has {', '.join(known)}")
    return names


def encode_response(
    model_name: str,
    model_version: str | None,
    outputs: Mapping[str, np.ndarray],
    request_id: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A v2 inference response; `id` and `parameters` only when there is something to say."""
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        body["id"] = request_id
    if parameters:
        body["parameters"] = parameters
    body["outputs"] = [encode_output(name, array) for name, array in outputs.items()]
    return body


def encode_request(feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> bytes:
    """A v2 inference request body for numeric tensors (what the SageMaker backend sends Triton)."""
    inputs = [
        {
            "name": name,
            "shape": list(array.shape),
            "datatype": V2_DATATYPES[array.dtype],
            "data": array.ravel().tolist(),
        }
        for name, array in feeds.items()
    ]
    document = {"inputs": inputs, "outputs": [{"name": name} for name in outputs]}
    return json.dumps(document, separators=(",", ":")).encode()
