"""Open Inference Protocol v2 tensors: checks against the declared input, flat row-major output."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.runtime.errors import InputError
from functions.runtime.package import TensorSpec
from functions.runtime.tensors import (
    NUMPY_DTYPES,
    InferRequest,
    RequestInput,
    decode_input,
    decode_inputs,
    decode_output,
    encode_output,
    requested_outputs,
)

PIXELS = TensorSpec(name="pixels", datatype="FP32", shape=[-1, 8, 8])
TEXT = TensorSpec(name="text", datatype="BYTES", shape=[-1])


def test_numbers_become_an_array_of_the_declared_shape() -> None:
    tensor = RequestInput(name="pixels", shape=[2, 8, 8], datatype="FP32", data=list(range(128)))
    array = decode_input(tensor, PIXELS)
    assert array.dtype == np.float32
    assert array.shape == (2, 8, 8)
    assert array[1, 0, 0] == 64


def test_nested_data_is_flattened_row_major() -> None:
    nested = np.arange(64).reshape(1, 8, 8).tolist()
    tensor = RequestInput(name="pixels", shape=[1, 8, 8], datatype="FP32", data=nested)
    np.testing.assert_array_equal(decode_input(tensor, PIXELS).ravel(), np.arange(64))


def test_bytes_stay_strings() -> None:
    assert decode_input(RequestInput(name="text", shape=[2], datatype="BYTES", data=["a", "b"]), TEXT) == ["a", "b"]


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (RequestInput(name="text", shape=[1], datatype="FP32", data=[1.0]), "datatype FP32, expected BYTES"),
        (RequestInput(name="text", shape=[2], datatype="BYTES", data=["a"]), "needs 2 values, got 1"),
        (RequestInput(name="text", shape=[1, 1], datatype="BYTES", data=["a"]), "does not match"),
        (RequestInput(name="text", shape=[-2], datatype="BYTES", data=[]), "negative"),
        (RequestInput(name="text", shape=[1], datatype="BYTES", data=[True]), "strings"),
    ],
)
def test_mismatches_are_input_errors(tensor: RequestInput, message: str) -> None:
    with pytest.raises(InputError, match=message):
        decode_input(tensor, TEXT)


def test_pixels_must_be_numbers_not_booleans() -> None:
    tensor = RequestInput(name="pixels", shape=[1, 8, 8], datatype="FP32", data=[True] * 64)
    with pytest.raises(InputError, match="numbers"):
        decode_input(tensor, PIXELS)


def test_outputs_are_flat_with_shape_and_datatype() -> None:
    probabilities = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    assert encode_output("probabilities", probabilities) == {
        "name": "probabilities",
        "shape": [2, 2],
        "datatype": "FP32",
        "data": [0.25, 0.75, 0.5, 0.5],
    }
    labels = np.array(["pos", "neg"], dtype=object)
    assert encode_output("label", labels)["datatype"] == "BYTES"
    assert encode_output("label", labels)["data"] == ["pos", "neg"]


def test_v2_outputs_round_trip() -> None:
    logits = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(decode_output(encode_output("logits", logits)), logits)


def test_a_request_is_decoded_against_every_declared_input() -> None:
    ids = TensorSpec(name="input_ids", datatype="INT64", shape=[-1, -1])
    mask = TensorSpec(name="attention_mask", datatype="INT64", shape=[-1, -1])
    given = {"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}
    both = decode_inputs(
        InferRequest.model_validate({"inputs": [given, {**given, "name": "attention_mask"}]}), [ids, mask]
    )
    assert set(both) == {"input_ids", "attention_mask"}
    with pytest.raises(InputError, match="missing input 'attention_mask'"):
        decode_inputs(InferRequest.model_validate({"inputs": [given]}), [ids, mask])
    with pytest.raises(InputError, match="given twice"):
        decode_inputs(InferRequest.model_validate({"inputs": [given, given]}), [ids, mask])


def test_data_nested_deeper_than_the_shape_is_an_input_error() -> None:
    deep: list[Any] = ["a"]
    for _ in range(5000):  # as deep as the caller likes: refused at the shape's rank, not at Python's stack limit
        deep = [deep]
    with pytest.raises(InputError, match="nested deeper than its shape"):
        decode_input(RequestInput(name="text", shape=[1], datatype="BYTES", data=deep), TEXT)


def test_numbers_out_of_the_datatype_range_are_input_errors() -> None:
    tensor = RequestInput(name="pixels", shape=[1, 8, 8], datatype="FP32", data=[10**400] * 64)
    with pytest.raises(InputError, match="out of range for FP32"):
        decode_input(tensor, PIXELS)
    ids = TensorSpec(name="input_ids", datatype="INT64", shape=[-1])
    with pytest.raises(InputError, match="out of range for INT64"):
        decode_input(RequestInput(name="input_ids", shape=[1], datatype="INT64", data=[2**70]), ids)


def test_requested_outputs_are_each_named_once_in_order() -> None:
    specs = [TensorSpec(name="label", datatype="BYTES", shape=[-1]), PIXELS.model_copy(update={"name": "scores"})]
    request = InferRequest.model_validate(
        {
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
            "outputs": [{"name": "scores"}, {"name": "label"}, {"name": "scores"}],
        }
    )
    assert requested_outputs(request, specs) == ["scores", "label"]


# --- property: every valid tensor decodes to its declared shape and datatype (issue 9, finding 8) ------------------

RANGES: dict[str, tuple[int | float, int | float]] = {
    "UINT8": (0, 255),
    "INT8": (-128, 127),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "FP16": (-65504.0, 65504.0),
    "FP32": (-3.4e38, 3.4e38),
    "FP64": (-1.7e308, 1.7e308),
}


@st.composite
def valid_tensors(draw: st.DrawFn) -> tuple[RequestInput, TensorSpec, list[Any]]:
    """A tensor as a client may send it (flat or nested row-major), the spec it is valid for, and its flat values."""
    datatype = draw(st.sampled_from([*RANGES, "BYTES"]))
    shape = draw(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=4))
    declared = [-1, *[draw(st.sampled_from([size, -1])) for size in shape[1:]]]
    low, high = RANGES.get(datatype, (0, 0))
    if datatype == "BYTES":
        values = st.text(max_size=8)
    elif datatype.startswith("FP"):
        values = st.floats(min_value=low, max_value=high, allow_nan=False, width=16 if datatype == "FP16" else 64)
    else:
        values = st.integers(min_value=int(low), max_value=int(high))
    flat = draw(st.lists(values, min_size=math.prod(shape), max_size=math.prod(shape)))
    data: list[Any] = flat
    if draw(st.booleans()):
        data = np.asarray(flat, dtype=object).reshape(shape).tolist()
    return (
        RequestInput(name="x", shape=shape, datatype=datatype, data=data),
        TensorSpec(name="x", datatype=datatype, shape=declared),
        flat,
    )


@settings(max_examples=300, deadline=None)
@given(case=valid_tensors())
def test_valid_tensors_decode_to_their_declared_shape_and_datatype(
    case: tuple[RequestInput, TensorSpec, list[Any]],
) -> None:
    tensor, spec, flat = case
    decoded = decode_input(tensor, spec)
    if spec.datatype == "BYTES":
        assert decoded == flat
        return
    assert decoded.shape == tuple(tensor.shape)
    assert decoded.dtype == NUMPY_DTYPES[spec.datatype]
    np.testing.assert_array_equal(decoded.ravel(), np.asarray(flat, dtype=NUMPY_DTYPES[spec.datatype]))


def test_a_request_s_repr_leaves_the_tensor_data_out() -> None:
    # Powertools formats the route's arguments into a debug line on every request; 10,000 pixels must not be printed
    pixels = list(range(10_000))
    request = InferRequest.model_validate(
        {"inputs": [{"name": "pixels", "shape": [10_000], "datatype": "FP32", "data": pixels}]}
    )
    text = repr(request)
    assert "pixels" in text
    assert "10000 items" in text
    assert len(text) < 300
