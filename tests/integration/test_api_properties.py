"""Properties of the API handler over generated bodies (issue 9, finding 8): whatever JSON, almost-JSON or bytes a
client sends to the v1 and v2 routes, the answer is a 2xx or a 4xx with a JSON body, never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.api.app import ApiFunction
from tests.integration.test_api_handler import Call, api_caller

PATHS = [
    "/v2/models/sentiment/infer",
    "/v2/models/embeddings/infer",
    "/v2/models/digits/infer",
    "/v1/models/sentiment:predict",
    "/v1/models/embeddings:predict",
    "/v1/models/digits:predict",
]
PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

LONE_SURROGATES = st.characters(categories=["Cs"]).map(lambda surrogate: f"text {surrogate} here")
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**300), max_value=10**300),
    st.floats(),  # NaN and infinities included: json.dumps writes them, and they are not JSON
    st.text(max_size=20),
    LONE_SURROGATES,
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=40,
)


@st.composite
def mostly(draw: st.DrawFn, usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
    """`usual` about three times in four: bodies that get past one check and on to the next."""
    return draw(usual if draw(st.integers(min_value=0, max_value=3)) else odd)


NAMES = st.sampled_from(["text", "pixels", "label", "probabilities", "embedding", ""]) | st.text(max_size=8)
DATATYPES = st.sampled_from(["BYTES", "FP32", "FP16", "INT64", "BOOL", "fp32", ""])
SHAPES = st.lists(st.integers(min_value=-2, max_value=70) | st.integers(), max_size=4)
PIXELS = mostly(st.floats(min_value=0, max_value=16), st.floats(width=32) | st.integers(-(10**40), 10**40))
WORDS = st.text(max_size=30).filter(lambda text: bool(text.strip()))
TEXTS = mostly(WORDS, st.text(max_size=3) | LONE_SURROGATES | st.text(alphabet=" \t\n", max_size=3))


@st.composite
def v2_tensors(draw: st.DrawFn, text: bool) -> dict[str, Any]:
    """The tensor the model takes, each field sometimes replaced by anything: requests that get past the schema
    and reach the codec and the tasks."""
    if text:
        data: Any = draw(st.lists(TEXTS, min_size=1, max_size=10))
        tensor = {"name": "text", "shape": [len(data)], "datatype": "BYTES", "data": data}
    else:
        count = draw(st.integers(min_value=1, max_value=3))
        data = draw(st.lists(PIXELS, min_size=64 * count, max_size=64 * count))
        nested = [
            [data[start + row * 8 : start + row * 8 + 8] for row in range(8)] for start in range(0, len(data), 64)
        ]
        tensor = {
            "name": "pixels",
            "shape": [count, 8, 8],
            "datatype": "FP32",
            "data": draw(st.sampled_from([data, nested])),
        }
    for field, anything in (("name", NAMES), ("shape", SHAPES), ("datatype", DATATYPES), ("data", JSON)):
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            tensor[field] = draw(anything)
    return tensor


@st.composite
def v2_documents(draw: st.DrawFn, text: bool) -> dict[str, Any]:
    document: dict[str, Any] = {"inputs": draw(mostly(st.lists(v2_tensors(text), min_size=1, max_size=1), JSON))}
    if draw(st.booleans()):
        document["outputs"] = draw(mostly(st.lists(st.fixed_dictionaries({"name": NAMES}), max_size=5), JSON))
    if draw(st.booleans()):
        document["id"] = draw(mostly(TEXTS, JSON))
    if draw(st.booleans()):
        document["parameters"] = draw(mostly(st.dictionaries(st.text(max_size=8), JSON, max_size=3), JSON))
    return document


IMAGES = mostly(st.lists(st.lists(PIXELS, min_size=8, max_size=8), min_size=8, max_size=8), st.lists(PIXELS))


@st.composite
def v1_documents(draw: st.DrawFn, text: bool) -> dict[str, Any]:
    instance = mostly(TEXTS | st.fixed_dictionaries({"text": TEXTS}), JSON) if text else mostly(IMAGES, JSON)
    return {"instances": draw(mostly(st.lists(instance, min_size=1, max_size=6), JSON))}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


RAW_BODIES = st.one_of(
    st.binary(max_size=64),
    st.integers(min_value=1, max_value=6000).map(nested),
    st.integers(min_value=4000, max_value=6000).map(lambda digits: '{"instances": [' + "9" * digits + "]}"),
    st.builds(lambda document, cut: json.dumps(document)[:cut], v2_documents(text=True), st.integers(0, 60)),
)


@pytest.fixture
def call(api_handler: ApiFunction, load_event: Callable[[str], dict], lambda_context: Any) -> Call:
    return api_caller(api_handler, load_event("apigw_v2_health_ready"), lambda_context)


def assert_never_a_server_error(answer: tuple[int, Any, dict[str, str]]) -> None:
    status, body, _ = answer
    assert 200 <= status < 500, body
    if status >= 400:
        assert set(body) == {"error"}, body
        assert isinstance(body["error"], str)
        assert body["error"]


@PROPERTY_SETTINGS
@given(path=st.sampled_from(PATHS), document=JSON)
def test_any_json_document_is_never_a_server_error(call: Call, path: str, document: Any) -> None:
    assert_never_a_server_error(call("POST", path, raw=json.dumps(document)))


@PROPERTY_SETTINGS
@given(path=st.sampled_from(PATHS[:3]), data=st.data())
def test_any_v2_shaped_request_is_never_a_server_error(call: Call, path: str, data: st.DataObject) -> None:
    document = data.draw(v2_documents(text="digits" not in path))
    assert_never_a_server_error(call("POST", path, raw=json.dumps(document)))


@PROPERTY_SETTINGS
@given(path=st.sampled_from(PATHS[3:]), data=st.data())
def test_any_v1_shaped_request_is_never_a_server_error(call: Call, path: str, data: st.DataObject) -> None:
    document = data.draw(v1_documents(text="digits" not in path))
    assert_never_a_server_error(call("POST", path, raw=json.dumps(document)))


@PROPERTY_SETTINGS
@given(path=st.sampled_from(PATHS), body=RAW_BODIES)
def test_any_bytes_are_never_a_server_error(call: Call, path: str, body: bytes | str) -> None:
    assert_never_a_server_error(call("POST", path, raw=body))
