"""Data capture through the real API handler: sampled at the catalog rate, one record per instance on stdout, the
raw input only where opted in, and nothing from warm-up."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import pytest

from functions.api.app import ApiFunction, create_api
from functions.runtime.models import load_models
from functions.runtime.settings import Settings
from tests.integration.test_api_handler import api_caller, text_request

SENTIMENT_RATE = 0.3
REQUESTS = 400


def capture_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith('{"kind":"data_capture"')]


@pytest.fixture(scope="module")
def capturing_settings(serving_settings: Settings) -> Settings:
    return serving_settings.model_copy(
        update={"capture_rates": {"sentiment": SENTIMENT_RATE, "digits": 1.0}, "capture_inputs": ["digits"]}
    )


@pytest.fixture(scope="module")
def capturing_api(capturing_settings: Settings) -> ApiFunction:
    return create_api(capturing_settings, load_models(capturing_settings))


@pytest.fixture
def call(capturing_api: ApiFunction, load_event: Callable[[str], dict], lambda_context: Any) -> Callable[..., Any]:
    return api_caller(capturing_api, load_event("apigw_v2_health_ready"), lambda_context)


def test_warm_up_is_not_captured(capturing_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    load_models(capturing_settings)  # digits at rate 1.0 is warmed up at init
    assert capture_lines(capsys.readouterr().out) == []


def test_the_sampling_rate_is_honoured(call: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    # given a 30 % rate, when 400 requests of one text arrive
    capsys.readouterr()
    for index in range(REQUESTS):
        status, _, _ = call("POST", "/v2/models/sentiment/infer", text_request(f"request number {index}"))
        assert status == 200
    records = capture_lines(capsys.readouterr().out)
    # then about 120 are captured: 4.4 binomial standard deviations (9.2) either way fail once in 10^5 runs
    expected = REQUESTS * SENTIMENT_RATE
    spread = 4.4 * (REQUESTS * SENTIMENT_RATE * (1 - SENTIMENT_RATE)) ** 0.5
    assert expected - spread < len(records) < expected + spread, len(records)
    assert {record["model"] for record in records} == {"sentiment"}


def test_a_record_per_instance_with_statistics_and_prediction_but_no_text(
    call: Callable[..., Any], capturing_api: ApiFunction, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    for _ in range(20):  # at 30 %, twenty two-text requests capture some with near certainty (1 - 0.7^20)
        call("POST", "/v2/models/sentiment/infer", text_request("short one", "a second, longer text " * 40))
    records = capture_lines(capsys.readouterr().out)
    assert records
    assert len(records) % 2 == 0  # both instances of a sampled request
    model = capturing_api.models["sentiment"]
    for record in records:
        assert set(record) == {"kind", "model", "version", "time", "features", "prediction"}  # no "input"
        assert record["version"] == model.version
        assert datetime.fromisoformat(record["time"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
        assert set(record["features"]) == {"tokens", "truncated"}
        assert record["prediction"]["label"] in model.manifest.labels
    max_length = model.manifest.preprocessing.max_length
    short_tokens = len(model.processor.tokenizer.encode("short one").ids)  # type: ignore[attr-defined]
    assert {(r["features"]["tokens"], r["features"]["truncated"]) for r in records} == {
        (short_tokens, 0.0),
        (max_length, 1.0),
    }


def test_raw_input_only_where_the_catalog_opts_in(call: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    images = np.random.default_rng(3).integers(0, 17, (3, 8, 8)).astype(float)
    capsys.readouterr()
    status, _, _ = call("POST", "/v1/models/digits:predict", {"instances": images.tolist()})
    call("POST", "/v1/models/embeddings:predict", {"instances": ["not captured at all"]})
    assert status == 200
    records = capture_lines(capsys.readouterr().out)
    assert [record["model"] for record in records] == ["digits"] * 3
    for record, image in zip(records, images, strict=True):
        assert record["input"] == image.tolist()
        assert record["features"]["pixel_mean"] == pytest.approx(image.mean(), rel=1e-5)
        assert record["features"]["pixel_std"] == pytest.approx(image.std(), rel=1e-5)
