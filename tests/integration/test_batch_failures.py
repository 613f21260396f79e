"""The batch handler when things go wrong: a bad row fails alone, a file that can never be scored fails once (its
message deleted, a "failed" summary saying why), and S3 or backend trouble leaves the message to be retried."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.exceptions import ClientError

from functions.batch.app import create_batch_handler
from functions.batch.rows import MAX_ROW_BYTES
from functions.runtime.models import ServedModel
from functions.runtime.settings import Settings
from tests.integration.test_batch_handler import (
    BUCKET,
    all_keys,
    assert_every_row_once,
    moto_bucket,
    outputs,
    put,
    read_summary,
    sqs_event,
)


@pytest.fixture
def s3() -> Iterator[Any]:
    with moto_bucket() as client:
        yield client


@pytest.fixture
def deliver(
    serving_settings: Settings,
    loaded_models: Mapping[str, ServedModel],
    load_event: Callable[[str], dict],
    lambda_context: Any,
    s3: Any,
) -> Callable[..., dict]:
    """One SQS message per key, about each key's current object, handed to a batch function built over moto."""
    function, template = create_batch_handler(serving_settings, loaded_models, s3), load_event("sqs_s3_put")
    return lambda *keys: dict(function.lambda_handler(sqs_event(template["Records"][0], s3, *keys), lambda_context))


def metrics_published(captured: str) -> dict[str, list[float]]:
    """The metric values in the EMF documents the function printed."""
    published: dict[str, list[float]] = {}
    for line in captured.splitlines():
        document = json.loads(line) if line.startswith('{"_aws"') else {}
        for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
            for metric in directive["Metrics"]:
                published.setdefault(metric["Name"], []).extend(document[metric["Name"]])
    return published


def test_one_bad_row_never_fails_the_file(deliver: Callable[..., dict], s3: Any) -> None:
    # given good rows around every kind of row that used to fail the whole file
    key = "batch/input/sentiment/hostile.jsonl"
    put(
        s3,
        key,
        [
            json.dumps({"id": "first", "text": "a good row"}),
            '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}",  # RecursionError in json
            '{"id": ' + "7" * 5_000 + ', "text": "x"}',  # ValueError: int over 4300 digits
            '{"id": "r4", "text": "a lone \\ud800 surrogate"}',  # TypeError in the tokenizer, for the whole chunk
            '{"id": "\\udfff", "text": "fine text, bad id"}',  # UnicodeEncodeError writing the row
            json.dumps({"id": "huge", "text": "x" * (2 * MAX_ROW_BYTES)}),  # one line over the row limit
            json.dumps({"id": "last", "text": "another good row"}),
        ],
    )
    # when
    assert deliver(key) == {"batchItemFailures": []}
    # then the good rows are scored, each bad row is an error row with its line and reason, and the summary counts all
    summary, results, errors = outputs(s3, "batch/output/sentiment/hostile.jsonl.summary.json")
    assert (summary["status"], summary["rows"], summary["scored"], summary["failed"]) == ("complete", 7, 2, 5)
    assert [row["id"] for row in results] == ["first", "last"]
    reasons = {row["line"]: row["reason"] for row in errors}
    assert reasons[2] == "invalid JSON: nested too deeply"
    assert reasons[3].startswith("invalid JSON: Exceeds the limit (4300 digits)")
    assert "lone surrogate" in reasons[4]
    assert "lone surrogate" in reasons[5]
    assert reasons[6] == f"row is {2 * MAX_ROW_BYTES + 26} bytes; the limit is {MAX_ROW_BYTES} bytes"
    assert_every_row_once(results, errors, {1, 2, 3, 4, 5, 6, 7})


def test_digits_values_python_cannot_convert_fail_their_row_only(deliver: Callable[..., dict], s3: Any) -> None:
    image = (np.arange(64) % 17).tolist()
    put(
        s3, "batch/input/digits/a.jsonl", [json.dumps({"pixels": [10**399, *image[1:]]}), json.dumps({"pixels": image})]
    )
    deep, long_int = "[" * 5_000 + "]" * 5_000, "9" * 5_000
    put(s3, "batch/input/digits/b.csv", ["id,pixels", f"deep,{deep}", f"long,{long_int}", f'ok,"{json.dumps(image)}"'])
    assert deliver("batch/input/digits/a.jsonl", "batch/input/digits/b.csv") == {"batchItemFailures": []}
    summary, results, errors = outputs(s3, "batch/output/digits/a.jsonl.summary.json")
    assert (summary["scored"], summary["failed"]) == (1, 1)
    assert [row["line"] for row in errors] == [1]  # a 400-digit number does not fit a float (OverflowError)
    summary, results, errors = outputs(s3, "batch/output/digits/b.csv.summary.json")
    assert [row["id"] for row in results] == ["ok"]
    assert {row["id"]: row["reason"] for row in errors} == {
        "deep": "field 'pixels' must be a JSON array of numbers",
        "long": "field 'pixels' must be a JSON array of numbers",
    }


def test_csv_quoted_newlines_are_one_row_numbered_by_its_first_line(deliver: Callable[..., dict], s3: Any) -> None:
    key = "batch/input/sentiment/letters.csv"
    put(s3, key, ["id,text", 'a,"Dear team,', "", "the update is great.", '""Thanks"""', "b,short", 'c,"two', 'lines"'])
    assert deliver(key) == {"batchItemFailures": []}
    summary, results, _ = outputs(s3, "batch/output/sentiment/letters.csv.summary.json")
    assert (summary["rows"], summary["scored"], summary["failed"]) == (3, 3, 0)
    assert [(row["id"], row["line"]) for row in results] == [("a", 2), ("b", 6), ("c", 7)]


@pytest.mark.parametrize(
    ("key", "content_type", "reason"),
    [
        ("batch/input/no-such-model/x.jsonl", "application/x-ndjson", "no model named 'no-such-model'"),
        ("batch/input/sentiment/table.parquet", "application/octet-stream", "cannot tell the format"),
    ],
    ids=["unknown-model", "unknown-format"],
)
def test_a_file_that_can_never_be_scored_fails_once_and_is_not_retried(
    deliver: Callable[..., dict], s3: Any, capsys: pytest.CaptureFixture[str], key: str, content_type: str, reason: str
) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"text": "x"}\n', ContentType=content_type)
    # when: the message succeeds, so SQS deletes it rather than retrying it into the dead-letter queue
    assert deliver(key) == {"batchItemFailures": []}
    # then one "failed" summary says why, with no outputs
    summary_key = key.replace("batch/input/", "batch/output/", 1) + ".summary.json"
    summary = read_summary(s3, summary_key)
    assert summary["status"] == "failed"
    assert reason in summary["reason"]
    assert (summary["rows"], summary["input"]["key"], "outputs" in summary) == (0, key, False)
    assert [item for item in all_keys(s3) if item not in (key, summary_key)] == []
    assert metrics_published(capsys.readouterr().out)["FilesFailed"] == [1.0]
    # and a repeated notification neither writes again nor fails
    assert deliver(key) == {"batchItemFailures": []}
    assert read_summary(s3, summary_key) == summary
    assert metrics_published(capsys.readouterr().out)["DuplicatesSkipped"] == [1.0]


def test_folder_markers_and_keys_outside_the_layout_are_not_retried(
    deliver: Callable[..., dict], s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    s3.put_object(
        Bucket=BUCKET, Key="batch/input/sentiment/2026/", Body=b""
    )  # what the console's "Create folder" makes
    s3.put_object(Bucket=BUCKET, Key="batch/input/no-model-folder.jsonl", Body=b'{"text": "x"}\n')
    assert deliver("batch/input/sentiment/2026/", "batch/input/no-model-folder.jsonl") == {"batchItemFailures": []}
    assert not any(key.startswith("batch/output/") for key in all_keys(s3))
    published = metrics_published(capsys.readouterr().out)
    assert (published["FoldersIgnored"], published["FilesRefused"]) == ([1.0], [1.0])


def test_a_failed_commit_is_retried_and_then_written_once(
    deliver: Callable[..., dict], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given S3 answering 500 to the summary's conditional put
    key = "batch/input/sentiment/commit.jsonl"
    put(s3, key, [json.dumps({"text": "scored, then committed"})])
    put_object = s3.put_object

    def failing(**kwargs: Any) -> Any:
        if kwargs["Key"].endswith(".summary.json"):
            raise ClientError(
                {"Error": {"Code": "InternalError", "Message": "We encountered an internal error."}}, "Put"
            )
        return put_object(**kwargs)

    monkeypatch.setattr(s3, "put_object", failing)
    # when / then: the message is left for a retry (its only record failed, so Powertools fails the whole batch)
    with pytest.raises(BatchProcessingError, match="All records failed"):
        deliver(key)
    assert "batch/output/sentiment/commit.jsonl.summary.json" not in all_keys(s3)
    # and the retry commits one summary, pointing at its own run's files
    monkeypatch.setattr(s3, "put_object", put_object)
    assert deliver(key) == {"batchItemFailures": []}
    summary, results, _ = outputs(s3, "batch/output/sentiment/commit.jsonl.summary.json")
    assert summary["run_id"] in summary["outputs"]["results"]
    assert len(results) == summary["scored"] == 1


def test_a_row_the_model_answers_with_nan_fails_alone(
    deliver: Callable[..., dict], s3: Any, loaded_models: Mapping[str, ServedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a graph that answers NaN for an all-zero image (a broken model on one input, not a broken backend)
    backend = loaded_models["digits"].backend
    real_run = backend.run

    def nan_for_blank(feeds: dict) -> dict:
        outputs = real_run(feeds)
        blank = next(iter(feeds.values())).reshape(len(next(iter(outputs.values()))), -1).sum(axis=1) == 0
        return {name: np.where(blank[:, None], np.nan, value) for name, value in outputs.items()}

    monkeypatch.setattr(backend, "run", nan_for_blank)
    image = (np.arange(64) % 17).tolist()
    rows = [{"id": "a", "pixels": image}, {"id": "blank", "pixels": [0] * 64}, {"id": "b", "pixels": image}]
    put(s3, "batch/input/digits/nan.jsonl", [json.dumps(row) for row in rows])
    # when
    assert deliver("batch/input/digits/nan.jsonl") == {"batchItemFailures": []}
    # then the other rows are scored, and the NaN row is an error row saying so (never "NaN" in the results file)
    summary, results, errors = outputs(s3, "batch/output/digits/nan.jsonl.summary.json")
    assert [row["id"] for row in results] == ["a", "b"]
    assert [(row["id"], row["line"]) for row in errors] == [("blank", 2)]
    assert "NaN or infinite" in errors[0]["reason"]
    assert summary["failed"] == 1
    # and without the check the row would be "scored", with NaN (not JSON) written into the results file
    monkeypatch.setattr("functions.runtime.models.check_finite", lambda outputs: None)
    put(s3, "batch/input/digits/nan-unchecked.jsonl", [json.dumps(row) for row in rows])
    assert deliver("batch/input/digits/nan-unchecked.jsonl") == {"batchItemFailures": []}
    body = s3.get_object(
        Bucket=BUCKET,
        Key=read_summary(s3, "batch/output/digits/nan-unchecked.jsonl.summary.json")["outputs"]["results"],
    )["Body"].read()
    assert b"NaN" in body
