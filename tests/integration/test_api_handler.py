"""The HTTP API handler driven with real API Gateway payload 2.0 events: every route and every bad-input case."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from functions.api.app import ApiFunction
from functions.runtime.errors import BackendError

Answer = tuple[int, Any, dict[str, str]]
Call = Callable[..., Answer]


def api_event(
    template: dict[str, Any],
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: str | bytes | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A real payload-2.0 event rewritten to the given request; a body that is not UTF-8 goes base64-encoded, as
    API Gateway sends it."""
    event = json.loads(json.dumps(template))
    event["rawPath"] = path
    event["requestContext"]["http"].update(method=method, path=path)
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    if data is not None:
        encoded = data.encode() if isinstance(data, str) else data
        try:
            event["body"] = encoded.decode()
        except UnicodeDecodeError:
            event["body"], event["isBase64Encoded"] = base64.b64encode(encoded).decode(), True
        event["headers"]["content-type"] = "application/json"
        event["headers"]["content-length"] = str(len(encoded))
    event["headers"].update(headers or {})
    return event


def answer_of(function: ApiFunction, event: dict[str, Any], context: Any) -> Answer:
    """Invoke the handler; the body must be JSON whatever the status."""
    response = function.lambda_handler(event, context)
    return response["statusCode"], json.loads(response["body"]), response.get("headers", {})


def api_caller(function: ApiFunction, template: dict[str, Any], context: Any) -> Call:
    """call(method, path, body, raw=..., headers=...): `function` invoked with `template` rewritten to that request."""

    def invoke(method: str, path: str, body: Any = None, **options: Any) -> Answer:
        return answer_of(function, api_event(template, method, path, body, **options), context)

    return invoke


@pytest.fixture
def call(api_handler: ApiFunction, load_event: Callable[[str], dict], lambda_context: Any) -> Call:
    """Invoke the handler with a real payload-2.0 event rewritten to the given method, path, body and headers."""
    return api_caller(api_handler, load_event("apigw_v2_health_ready"), lambda_context)


def text_request(*texts: str, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": list(texts)}], **extra}


def assert_client_error(status: int, body: Any, expected_status: int, *words: str) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"}
    assert isinstance(body["error"], str)
    assert "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"]


# --- health, metadata, OpenAPI -------------------------------------------------------------------------------------


def test_liveness_and_readiness(
    call: Call, api_handler: ApiFunction, load_event: Callable, lambda_context: Any
) -> None:
    # given the real readiness event
    response = api_handler.lambda_handler(load_event("apigw_v2_health_ready"), lambda_context)
    # then
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"ready": True}
    assert call("GET", "/v2/health/live")[:2] == (200, {"live": True})


def test_model_metadata_comes_from_the_manifest(
    api_handler: ApiFunction, load_event: Callable, lambda_context: Any
) -> None:
    manifest = api_handler.models["sentiment"].manifest
    response = api_handler.lambda_handler(load_event("apigw_v2_model_metadata"), lambda_context)
    body = json.loads(response["body"])
    assert response["statusCode"] == 200
    assert body == {
        "name": "sentiment",
        "versions": [manifest.version],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(manifest.labels)]},
        ],
    }


def test_model_and_version_readiness(call: Call, api_handler: ApiFunction) -> None:
    version = api_handler.models["digits"].version
    assert call("GET", "/v2/models/digits/ready")[:2] == (200, {"name": "digits", "ready": True})
    assert call("GET", f"/v2/models/digits/versions/{version}/ready")[0] == 200
    assert call("GET", f"/v2/models/digits/versions/{version}")[1]["versions"] == [version]
    status, body, _ = call("GET", "/v2/models/digits/versions/19990101T000000Z/ready")
    assert_client_error(status, body, 404, "19990101T000000Z")


def test_server_metadata(call: Call) -> None:
    status, body, _ = call("GET", "/v2")
    assert status == 200
    assert body["name"] == "serverless-model-serving"


def test_openapi_document_lists_both_protocols(call: Call) -> None:
    status, body, _ = call("GET", "/openapi.json")
    assert status == 200
    assert body["openapi"].startswith("3.")
    assert "/v2/models/{name}/infer" in body["paths"]
    assert "/v1/models/{name}:predict" in body["paths"]
    assert "post" in body["paths"]["/v2/models/{name}/infer"]


# --- v2 inference ----------------------------------------------------------------------------------------------------


def test_v2_infer_event_matches_the_model(api_handler: ApiFunction, load_event: Callable, lambda_context: Any) -> None:
    # given the real v2 event with two texts
    event = load_event("apigw_v2_infer_sentiment")
    texts = json.loads(event["body"])["inputs"][0]["data"]
    model = api_handler.models["sentiment"]
    # when
    response = api_handler.lambda_handler(event, lambda_context)
    # then the response follows the v2 spec and equals the runtime's own prediction
    body = json.loads(response["body"])
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "application/json"
    assert body["model_name"] == "sentiment"
    assert body["model_version"] == model.version
    assert body["id"] == "req-1"
    assert "parameters" not in body
    label, probabilities = body["outputs"]
    assert label == {"name": "label", "shape": [2], "datatype": "BYTES", "data": label["data"]}
    assert probabilities["name"] == "probabilities"
    assert probabilities["datatype"] == "FP32"
    assert probabilities["shape"] == [2, len(model.manifest.labels)]
    expected = model.predict(texts)
    np.testing.assert_allclose(np.reshape(probabilities["data"], (2, -1)), expected["probabilities"], atol=1e-6)
    assert label["data"] == list(expected["label"])
    rows = np.reshape(probabilities["data"], (2, -1))
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-5)
    assert label["data"] == [model.manifest.labels[i] for i in rows.argmax(axis=1)]


def test_v2_requested_outputs_are_honoured(call: Call) -> None:
    status, body, _ = call("POST", "/v2/models/sentiment/infer", text_request("fine", outputs=[{"name": "label"}]))
    assert status == 200
    assert [output["name"] for output in body["outputs"]] == ["label"]
    assert "id" not in body


def test_v2_reports_truncated_texts(call: Call, api_handler: ApiFunction) -> None:
    # given one text far over max_length
    max_length = api_handler.models["sentiment"].manifest.preprocessing.max_length
    long_text = "word " * (max_length * 4)
    # when
    status, body, _ = call("POST", "/v2/models/sentiment/infer", text_request("short one", long_text))
    # then it is scored (truncated), and the response says which one
    assert status == 200
    assert body["parameters"] == {"truncated": [1]}
    assert body["outputs"][0]["shape"] == [2]


def test_v2_versioned_infer(call: Call, api_handler: ApiFunction) -> None:
    version = api_handler.models["sentiment"].version
    status, body, _ = call("POST", f"/v2/models/sentiment/versions/{version}/infer", text_request("ok"))
    assert status == 200
    assert body["model_version"] == version


def test_v2_embeddings_are_unit_vectors(call: Call) -> None:
    status, body, _ = call("POST", "/v2/models/embeddings/infer", text_request("a sentence", "another sentence"))
    assert status == 200
    (embedding,) = body["outputs"]
    assert embedding["name"] == "embedding"
    assert embedding["datatype"] == "FP32"
    assert embedding["shape"] == [2, 384]
    vectors = np.reshape(embedding["data"], (2, 384))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_v2_digits_accepts_flat_and_nested_pixels(call: Call) -> None:
    image = np.arange(64, dtype=np.float32).reshape(8, 8) % 17
    flat = {"inputs": [{"name": "pixels", "shape": [1, 8, 8], "datatype": "FP32", "data": image.ravel().tolist()}]}
    nested = {"inputs": [{"name": "pixels", "shape": [1, 8, 8], "datatype": "FP32", "data": [image.tolist()]}]}
    first = call("POST", "/v2/models/digits/infer", flat)
    second = call("POST", "/v2/models/digits/infer", nested)
    assert first[0] == second[0] == 200
    assert first[1]["outputs"] == second[1]["outputs"]
    label, probabilities = first[1]["outputs"]
    assert label["datatype"] == "BYTES"
    assert label["data"][0] in [str(digit) for digit in range(10)]
    assert probabilities["shape"] == [1, 10]


# --- v1 prediction ---------------------------------------------------------------------------------------------------


def test_v1_predict_event_with_colon_path(api_handler: ApiFunction, load_event: Callable, lambda_context: Any) -> None:
    # given the real payload-2.0 event whose rawPath is /v1/models/sentiment:predict
    event = load_event("apigw_v1_predict_sentiment")
    assert event["rawPath"] == "/v1/models/sentiment:predict"
    labels = api_handler.models["sentiment"].manifest.labels
    # when
    response = api_handler.lambda_handler(event, lambda_context)
    # then strings and {"text": ...} instances both score
    body = json.loads(response["body"])
    assert response["statusCode"] == 200
    assert len(body["predictions"]) == 2
    for prediction in body["predictions"]:
        assert set(prediction) == {"label", "score", "scores"}
        assert list(prediction["scores"]) == labels
        assert prediction["score"] == max(prediction["scores"].values())
        assert prediction["label"] == max(prediction["scores"], key=prediction["scores"].get)
        assert sum(prediction["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_v1_embeddings_are_vectors(call: Call) -> None:
    status, body, _ = call("POST", "/v1/models/embeddings:predict", {"instances": ["hello", {"text": "world"}]})
    assert status == 200
    assert [len(vector) for vector in body["predictions"]] == [384, 384]


def test_v1_digits_nested_and_flat_agree(call: Call) -> None:
    image = (np.arange(64) % 17).reshape(8, 8).tolist()
    flat = [value for row in image for value in row]
    status, body, _ = call("POST", "/v1/models/digits:predict", {"instances": [image, flat]})
    assert status == 200
    assert body["predictions"][0] == body["predictions"][1]


def test_v1_model_status(call: Call) -> None:
    assert call("GET", "/v1/models/sentiment")[:2] == (200, {"name": "sentiment", "ready": True})


# --- bad input: always a 4xx {"error": ...} naming the problem -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        (
            "/v2/models/sentiment/infer",
            {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            ["datatype", "BYTES"],
        ),
        (
            "/v2/models/sentiment/infer",
            {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a"]}]},
            ["shape"],
        ),
        (
            "/v2/models/sentiment/infer",
            {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]}]},
            ["shape"],
        ),
        (
            "/v2/models/sentiment/infer",
            {"inputs": [{"name": "text", "shape": [0], "datatype": "BYTES", "data": []}]},
            ["no instances"],
        ),
        ("/v2/models/sentiment/infer", {"inputs": []}, ["inputs"]),
        ("/v2/models/sentiment/infer", {"id": "x"}, ["inputs", "Field required"]),
        ("/v2/models/sentiment/infer", {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES"}]}, ["data"]),
        (
            "/v2/models/sentiment/infer",
            {"inputs": [{"name": "txt", "shape": [1], "datatype": "BYTES", "data": ["a"]}]},
            ["unknown input", "txt"],
        ),
        (
            "/v2/models/sentiment/infer",
            {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [" "]}]},
            ["empty"],
        ),
        (
            "/v2/models/sentiment/infer",
            {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [7]}]},
            ["strings"],
        ),
        ("/v2/models/sentiment/infer", {**text_request("a"), "outputs": [{"name": "logits"}]}, ["logits"]),
        (
            "/v2/models/digits/infer",
            {"inputs": [{"name": "pixels", "shape": [1, 7, 7], "datatype": "FP32", "data": [0.0] * 49}]},
            ["shape"],
        ),
        (
            "/v2/models/digits/infer",
            {"inputs": [{"name": "pixels", "shape": [1, 8, 8], "datatype": "FP32", "data": ["x"] * 64}]},
            ["numbers"],
        ),
        ("/v1/models/sentiment:predict", {"instances": []}, ["instances"]),
        ("/v1/models/sentiment:predict", {"instances": ["fine", 42]}, ["instance 1", "string"]),
        ("/v1/models/sentiment:predict", {"inputs": ["fine"]}, ["instances"]),
        ("/v1/models/digits:predict", {"instances": [[1, 2, 3]]}, ["instance 0", "shape"]),
    ],
)
def test_bad_input_is_a_400_naming_the_problem(call: Call, path: str, body: Any, words: list[str]) -> None:
    status, answer, _ = call("POST", path, body)
    assert_client_error(status, answer, 400, *words)


def test_malformed_json_is_a_400(call: Call) -> None:
    status, body, _ = call("POST", "/v2/models/sentiment/infer", raw='{"inputs": [')
    assert_client_error(status, body, 400, "malformed JSON")


def test_missing_body_is_a_400(call: Call) -> None:
    status, body, _ = call("POST", "/v1/models/sentiment:predict")
    assert_client_error(status, body, 400, "body is required")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/nope"),
        ("GET", "/v2/models/nope/ready"),
        ("POST", "/v2/models/nope/infer"),
        ("POST", "/v1/models/nope:predict"),
    ],
)
def test_unknown_model_is_a_404(call: Call, method: str, path: str) -> None:
    body = text_request("a") if path.endswith("infer") else ({"instances": ["a"]} if method == "POST" else None)
    status, answer, _ = call(method, path, body)
    assert_client_error(status, answer, 404, "'nope'")


def test_too_many_instances_is_a_413(call: Call, api_handler: ApiFunction) -> None:
    limit = api_handler.settings.max_instances_for("sentiment")
    texts = [f"text {i}" for i in range(limit + 1)]
    for path, body in [
        ("/v2/models/sentiment/infer", text_request(*texts)),
        ("/v1/models/sentiment:predict", {"instances": texts}),
    ]:
        status, answer, _ = call("POST", path, body)
        assert_client_error(status, answer, 413, str(limit + 1), f"at most {limit}")
    assert call("POST", "/v1/models/sentiment:predict", {"instances": texts[:limit]})[0] == 200


def test_body_over_six_megabytes_is_a_413(call: Call) -> None:
    big_text = "x" * (6 * 1024 * 1024)
    status, body, _ = call("POST", "/v1/models/sentiment:predict", {"instances": [big_text]})
    assert_client_error(status, body, 413, "limit")
    status, body, _ = call("POST", "/v1/models/sentiment:predict", raw="{" + big_text)  # malformed and too big
    assert_client_error(status, body, 413, "limit")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_wrong_content_type_is_a_415(call: Call, content_type: str) -> None:
    status, body, _ = call(
        "POST", "/v1/models/sentiment:predict", {"instances": ["a"]}, headers={"content-type": content_type}
    )
    assert_client_error(status, body, 415, "application/json")


def test_a_gets_body_is_ignored_not_checked(call: Call) -> None:
    # a GET route reads no body, so a body API Gateway passes along (any size or type) changes nothing
    status, body, _ = call("GET", "/v2/models/sentiment", raw="x" * 100, headers={"content-type": "text/plain"})
    assert status == 200, body
    assert body["name"] == "sentiment"


def test_triton_binary_extension_is_a_415(call: Call) -> None:
    status, body, _ = call(
        "POST", "/v2/models/sentiment/infer", text_request("a"), headers={"inference-header-content-length": "80"}
    )
    assert_client_error(status, body, 415, "binary")


def test_unknown_route_is_a_404(call: Call) -> None:
    status, body, _ = call("GET", "/v3/anything")
    assert_client_error(status, body, 404, "/v3/anything")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v2/models/sentiment/infer", "POST"),
        ("DELETE", "/v2/health/live", "GET"),
        ("PUT", "/v2/models/sentiment", "GET"),
        ("GET", "/v1/models/sentiment:predict", "POST"),
    ],
)
def test_wrong_method_is_a_405_with_allow(call: Call, method: str, path: str, allowed: str) -> None:
    status, body, headers = call(method, path)
    assert_client_error(status, body, 405, method)
    assert headers["Allow"] == allowed


def test_backend_failure_is_a_502_without_internals(
    call: Call, api_handler: ApiFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(feeds: dict) -> dict:
        raise BackendError("onnxruntime failed: /secret/path/model.onnx")

    monkeypatch.setattr(api_handler.models["sentiment"].backend, "run", broken)
    status, body, _ = call("POST", "/v2/models/sentiment/infer", text_request("a"))
    assert status == 502
    assert body == {"error": "the model backend failed; see the function logs"}


DIGIT = (np.arange(64) % 17).reshape(8, 8).tolist()
DIGIT_TENSOR = {"name": "pixels", "shape": [1, 8, 8], "datatype": "FP32", "data": [DIGIT]}
DIGIT_REQUESTS = {
    "v2": ("/v2/models/digits/infer", {"inputs": [DIGIT_TENSOR]}),
    "v1": ("/v1/models/digits:predict", {"instances": [DIGIT]}),
}


def numbers_in(document: Any) -> list[Any]:
    """Every leaf of a JSON document that stands where a number should (None included)."""
    if isinstance(document, dict):
        return [leaf for value in document.values() for leaf in numbers_in(value)]
    if isinstance(document, list):
        return [leaf for value in document for leaf in numbers_in(value)]
    return [] if isinstance(document, str | bool) else [document]


@pytest.mark.parametrize("protocol", DIGIT_REQUESTS)
def test_a_nan_output_is_a_500_naming_it_never_a_null_score(
    call: Call, api_handler: ApiFunction, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    # given a graph that answers NaN logits (a broken model, not a broken backend)
    backend = api_handler.models["digits"].backend
    real_run = backend.run

    def nan_logits(feeds: dict) -> dict:
        return {name: np.full_like(value, np.nan) for name, value in real_run(feeds).items()}

    monkeypatch.setattr(backend, "run", nan_logits)
    path, request = DIGIT_REQUESTS[protocol]
    # when
    status, body, _ = call("POST", path, request)
    # then the answer says what is wrong, instead of scores JSON cannot carry
    assert status == 500
    assert "NaN or infinite" in body["error"]
    # and without the check, the fast encoder would have sent a 200 with nulls where the scores belong
    monkeypatch.setattr("functions.runtime.models.check_finite", lambda outputs: None)
    status, body, _ = call("POST", path, request)
    assert status == 200
    assert None in numbers_in(body)


def test_log_lines_carry_the_request_id_as_correlation_id(
    api_handler: ApiFunction,
    load_event: Callable[[str], dict],
    lambda_context: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(feeds: dict) -> dict:
        raise BackendError("onnxruntime failed")

    monkeypatch.setattr(api_handler.models["sentiment"].backend, "run", broken)
    formatter = logging.getLogger(api_handler.settings.service_name).handlers[0].formatter
    assert formatter is not None
    for request_id in ("first-request-id", "second-request-id"):
        event = api_event(load_event("apigw_v2_health_ready"), "POST", "/v2/models/sentiment/infer", text_request("a"))
        event["requestContext"]["requestId"] = request_id
        caplog.clear()
        api_handler.lambda_handler(event, lambda_context)
        # the function's own JSON line for the failure, as CloudWatch receives it
        service = api_handler.settings.service_name
        lines = [json.loads(formatter.format(record)) for record in caplog.records if record.name == service]
        failures = [line for line in lines if line["message"] == "inference backend failed"]
        assert [line["correlation_id"] for line in failures] == [request_id]
