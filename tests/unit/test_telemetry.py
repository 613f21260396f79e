"""Each function has its own logger and metrics: two functions in one process (the local stack) never share state."""

from __future__ import annotations

import json
import logging

import pytest
from aws_lambda_powertools.metrics.exceptions import SchemaValidationError

from functions.runtime.settings import Settings
from functions.runtime.telemetry import function_telemetry


def test_keys_one_function_appends_never_reach_another(capsys: pytest.CaptureFixture[str]) -> None:
    # given the API and the batch function of the local stack, built in one process
    api_logger, _, _ = function_telemetry(Settings(service_name="api-under-test"))
    batch_logger, _, _ = function_telemetry(Settings(service_name="batch-under-test"))
    # when the batch function appends the key of the file it scores
    batch_logger.append_keys(input_key="batch/input/sentiment/a.jsonl")
    batch_logger.info("scoring")
    api_logger.info("answering")
    # then only the batch function's lines carry it
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_message = {line["message"]: line for line in lines}
    assert by_message["scoring"]["input_key"] == "batch/input/sentiment/a.jsonl"
    assert "input_key" not in by_message["answering"]


def test_metric_sets_are_per_function(capsys: pytest.CaptureFixture[str]) -> None:
    _, _, api_metrics = function_telemetry(Settings(service_name="api-under-test", metrics_namespace="Tests"))
    _, _, batch_metrics = function_telemetry(Settings(service_name="batch-under-test", metrics_namespace="Tests"))
    batch_metrics.add_dimension(name="model", value="sentiment")
    batch_metrics.add_metric(name="RowsScored", unit="Count", value=3)
    api_metrics.add_metric(name="InferenceLatency", unit="Milliseconds", value=1.5)
    api_metrics.flush_metrics()
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(documents) == 1
    assert "InferenceLatency" in documents[0]
    assert "RowsScored" not in documents[0]
    assert "model" not in documents[0]


def test_with_metrics_off_emf_goes_to_the_debug_log(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    _, _, metrics = function_telemetry(Settings(service_name="quiet", metrics_enabled=False))
    metrics.add_metric(name="InferenceLatency", unit="Milliseconds", value=1.5)
    with caplog.at_level(logging.DEBUG, logger="functions.metrics"):
        metrics.flush_metrics()
    assert capsys.readouterr().out == ""
    assert "InferenceLatency" in caplog.text


def test_an_invocation_writes_one_emf_line_that_cloudwatch_reads(capsys: pytest.CaptureFixture[str]) -> None:
    # given a function's metrics with a dimension and two metrics, as an API request records them
    _, _, metrics = function_telemetry(Settings(service_name="api-under-test", metrics_namespace="Tests"))
    metrics.add_dimension(name="model", value="sentiment")
    metrics.add_metric(name="InferenceLatency", unit="Milliseconds", value=1.25)
    metrics.add_metric(name="BatchSize", unit="Count", value=1)
    # when the invocation ends, then again with nothing new recorded
    metrics.flush_metrics()
    metrics.flush_metrics()
    # then exactly one line, an EMF document naming both metrics under the namespace and dimensions
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    document = json.loads(lines[0])
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Tests"
    assert directive["Dimensions"] == [["model", "service"]]
    assert {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]} == {
        "InferenceLatency": "Milliseconds",
        "BatchSize": "Count",
    }
    assert (document["InferenceLatency"], document["BatchSize"], document["model"]) == ([1.25], [1.0], "sentiment")


def test_an_empty_flush_publishes_nothing_unless_asked_to_fail(capsys: pytest.CaptureFixture[str]) -> None:
    _, _, metrics = function_telemetry(Settings(service_name="api-under-test", metrics_namespace="Tests"))
    metrics.flush_metrics()
    assert capsys.readouterr().out == ""
    with pytest.raises(SchemaValidationError):
        metrics.flush_metrics(raise_on_empty_metrics=True)


def test_with_powertools_metrics_disabled_no_invocation_ever_writes_emf(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # given POWERTOOLS_METRICS_DISABLED, and more invocations than the 100 values Powertools keeps before it prints
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    _, _, metrics = function_telemetry(Settings(service_name="api-under-test", metrics_namespace="Tests"))
    for _ in range(150):
        metrics.add_dimension(name="model", value="sentiment")
        metrics.add_metric(name="InferenceLatency", unit="Milliseconds", value=1.25)
        metrics.flush_metrics()
    # then nothing reached stdout, where CloudWatch would read it
    assert capsys.readouterr().out == ""
