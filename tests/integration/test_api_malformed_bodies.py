"""Hostile bodies and oversized answers (issue 9, findings 1-2): each is a 4xx whose JSON body names the problem,
never a 500, and never an answer Lambda could not return."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import pytest

from functions.api.app import ApiFunction, create_api
from functions.api.envelope import wrapped_size
from functions.runtime.models import ServedModel
from functions.runtime.settings import LAMBDA_PAYLOAD_LIMIT_BYTES, Settings
from functions.runtime.tensors import MAX_REQUESTED_OUTPUTS
from tests.integration.test_api_handler import Call, api_caller, assert_client_error, text_request

V2_SENTIMENT = "/v2/models/sentiment/infer"
V2_DIGITS = "/v2/models/digits/infer"


@pytest.fixture
def call(api_handler: ApiFunction, load_event: Callable[[str], dict], lambda_context: Any) -> Call:
    return api_caller(api_handler, load_event("apigw_v2_health_ready"), lambda_context)


def pixels_request(value: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "pixels", "shape": [1, 8, 8], "datatype": "FP32", "data": [value] * 64}]}


@pytest.mark.parametrize(
    ("path", "raw", "words"),
    [
        (V2_SENTIMENT, "[" * 5000 + "]" * 5000, ["malformed JSON", "nested too deeply"]),
        ("/v1/models/sentiment:predict", '{"instances": ' + "[" * 5000 + "]" * 5000 + "}", ["nested too deeply"]),
        (V2_SENTIMENT, '{"id": "x", "inputs": [' + "7" * 5000 + "]}", ["malformed JSON", "4300 digits"]),
        (V2_SENTIMENT, b"\xff", ["malformed JSON", "UTF-8", "0xff"]),
        (V2_SENTIMENT, b'{"inputs": "caf\xe9"}', ["UTF-8", "0xe9", "offset 15"]),
        (V2_DIGITS, json.dumps(pixels_request(1.0)).replace("1.0", "NaN"), ["malformed JSON", "NaN"]),
        (V2_DIGITS, json.dumps(pixels_request(1.0)).replace("1.0", "-Infinity"), ["malformed JSON", "Infinity"]),
    ],
    ids=["deep-v2", "deep-v1", "long-integer", "byte-ff", "latin-1", "nan", "infinity"],
)
def test_unparseable_bodies_are_a_400_naming_the_problem(
    call: Call, path: str, raw: str | bytes, words: list[str]
) -> None:
    status, body, _ = call("POST", path, raw=raw)
    assert_client_error(status, body, 400, *words)


@pytest.mark.parametrize(
    ("path", "document", "words"),
    [
        (V2_SENTIMENT, text_request("fine", "\ud800"), ["item 1", "lone surrogate", "\\ud800"]),
        (V2_SENTIMENT, {**text_request("fine"), "id": "text \ud800 here"}, ["id", "lone surrogate", "\\ud800"]),
        ("/v1/models/embeddings:predict", {"instances": [{"text": "a\udfffb"}]}, ["instance 0", "lone surrogate"]),
        (V2_DIGITS, pixels_request(3.4e38), ["from 0 to 16", "pixel_scale", "3.4e+38"]),
        (V2_DIGITS, pixels_request(-3.4e38), ["from 0 to 16", "-3.4e+38"]),
        ("/v1/models/digits:predict", {"instances": [[3.4e38] * 64]}, ["instance 0", "from 0 to 16"]),
        (V2_DIGITS, pixels_request(10**400), ["out of range for FP32"]),
        ("/v1/models/digits:predict", {"instances": [[10**400] * 64]}, ["instance 0", "numbers"]),
        (
            V2_SENTIMENT,
            {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [[["deep"]]]}]},
            ["nested deeper than its shape"],
        ),
    ],
    ids=[
        "surrogate-v2",
        "surrogate-id",
        "surrogate-v1",
        "pixels-max",
        "pixels-min",
        "pixels-v1",
        "huge-int",
        "huge-int-v1",
        "nesting",
    ],
)
def test_content_no_model_can_score_is_a_400_naming_the_problem(
    call: Call, path: str, document: Any, words: list[str]
) -> None:
    # json.dumps writes lone surrogates as the \\ud800 escape, and ints of any length: what a hostile client sends
    status, body, _ = call("POST", path, raw=json.dumps(document))
    assert_client_error(status, body, 400, *words)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_v1_pixel_beyond_fp32_is_refused_without_a_numpy_warning(call: Call) -> None:
    # a warning would land in the function's logs on every such request (here it is an error, so the answer a 500)
    status, body, _ = call("POST", "/v1/models/digits:predict", raw=json.dumps({"instances": [[1e39] * 64]}))
    assert_client_error(status, body, 400, "instance 0", "from 0 to 16", "inf")


def test_pixels_at_the_edges_of_the_range_still_score(call: Call) -> None:
    assert call("POST", V2_DIGITS, pixels_request(0.0))[0] == 200
    assert call("POST", V2_DIGITS, pixels_request(16))[0] == 200


def test_repeated_outputs_are_answered_once_each_in_the_order_asked(call: Call) -> None:
    outputs = [{"name": "probabilities"}, {"name": "label"}, {"name": "probabilities"}, {"name": "label"}]
    status, body, _ = call("POST", V2_SENTIMENT, text_request("fine", outputs=outputs))
    assert status == 200
    assert [output["name"] for output in body["outputs"]] == ["probabilities", "label"]


def test_an_outputs_list_longer_than_the_bound_is_refused(call: Call) -> None:
    # given the request of the issue: `probabilities` asked for 20,000 times
    request = text_request("fine", outputs=[{"name": "probabilities"}] * 20_000)
    # when / then it is refused, naming the bound, rather than parsed into an amplified answer
    status, body, _ = call("POST", V2_SENTIMENT, request)
    assert_client_error(status, body, 400, "outputs", f"at most {MAX_REQUESTED_OUTPUTS}")
    within = text_request("fine", outputs=[{"name": "probabilities"}] * MAX_REQUESTED_OUTPUTS)
    assert call("POST", V2_SENTIMENT, within)[0] == 200


@pytest.fixture(scope="module")
def api_with(serving_settings: Settings, loaded_models: Mapping[str, ServedModel]) -> Callable[..., ApiFunction]:
    """The API function over the session's models, with some settings changed."""

    def build(**changes: Any) -> ApiFunction:
        return create_api(serving_settings.model_copy(update=changes), loaded_models)

    return build


def test_an_answer_over_lambdas_response_limit_is_a_413_naming_it(
    api_with: Callable[..., ApiFunction], load_event: Callable[[str], dict], lambda_context: Any
) -> None:
    # given 1,024 embeddings in one request: about 8 MB of JSON, over Lambda's 6 MB response limit
    call = api_caller(api_with(max_instances={"embeddings": 1024}), load_event("apigw_v2_health_ready"), lambda_context)
    texts = [f"text number {index}" for index in range(1024)]
    # when
    status, body, _ = call("POST", "/v2/models/embeddings/infer", text_request(*texts))
    # then the caller is told, before Lambda would fail the invocation (a bare 502 at API Gateway)
    assert_client_error(status, body, 413, str(LAMBDA_PAYLOAD_LIMIT_BYTES), "fewer instances")
    # and a quarter of it is answered
    assert call("POST", "/v2/models/embeddings/infer", text_request(*texts[:256]))[0] == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/models/embeddings/infer", text_request("a", "b", "c")),
        ("/v1/models/sentiment:predict", {"instances": ["a", "b", "c"]}),
    ],
)
def test_the_response_limit_is_a_setting(
    api_with: Callable[..., ApiFunction],
    load_event: Callable[[str], dict],
    lambda_context: Any,
    path: str,
    body: dict[str, Any],
) -> None:
    call = api_caller(api_with(max_response_bytes=1500), load_event("apigw_v2_health_ready"), lambda_context)
    status, answer, _ = call("POST", path, body)
    assert_client_error(status, answer, 413, "limit is 1500 bytes")


@pytest.mark.parametrize("encoder", ["json", "orjson"])
@pytest.mark.parametrize(
    "document",
    [
        {"predictions": [{"label": 'a"b', "score": 0.5, "scores": {"a\\b": 0.5}}] * 50},
        {"outputs": [{"name": "embedding", "data": [0.123456789] * 500}]},
        {"error": "\u00e9\n\t" * 20},
        {"predictions": [{"label": "négatif 😞", "score": 0.5}] * 500},  # 16 escape bytes a row: past the margin
    ],
)
def test_the_size_checked_is_at_least_what_lambda_serialises(document: dict[str, Any], encoder: str) -> None:
    # orjson (the API's encoder) writes non-ASCII as it is; Lambda's serialiser escapes it, up to 12 bytes a character
    body = orjson.dumps(document).decode() if encoder == "orjson" else json.dumps(document, separators=(",", ":"))
    proxy_response = {
        "statusCode": 200,
        "body": body,
        "isBase64Encoded": False,
        "headers": {"Content-Type": "application/json"},
        "cookies": [],
    }
    assert wrapped_size(body) >= len(json.dumps(proxy_response).encode())
