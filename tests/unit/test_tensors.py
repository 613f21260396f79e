"""Open Inference Protocol v2 tensors: checks against the declared input, flat row-major output."""

from __future__ import annotations

import numpy as np
import pytest
from functions.runtime.tensors import (
    InferRequest,
    RequestInput,
    decode_input,
    decode_inputs,
    decode_output,
    encode_output,
)

from functions.runtime.errors import InputError
from functions.runtime.package import TensorSpec

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
