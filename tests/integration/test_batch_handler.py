"""The batch handler with moto S3: real SQS-in-S3 events, good and bad rows, idempotency, partial batch failures."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote_plus

import boto3
import numpy as np
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.exceptions import ClientError
from moto import mock_aws

from functions.batch.app import BatchFunction, create_batch_handler
from functions.runtime.errors import BackendError
from functions.runtime.models import ServedModel
from functions.runtime.settings import Settings

BUCKET = "model-serving-batch"


@contextmanager
def moto_bucket(versioned: bool = False) -> Iterator[Any]:
    """moto's S3 with the batch bucket (versioned, as the artifacts bucket is in the cloud, when asked)."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        if versioned:
            client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield client


@pytest.fixture
def s3() -> Iterator[Any]:
    with moto_bucket() as client:
        yield client


@pytest.fixture
def batch_handler(serving_settings: Settings, loaded_models: Mapping[str, ServedModel], s3: Any) -> BatchFunction:
    """The batch function built over moto's S3 client, as the entry point builds it over the sandbox's."""
    return create_batch_handler(serving_settings, loaded_models, s3)


def sqs_event(template: dict[str, Any], s3: Any, *keys: str, etags: Mapping[str, str] | None = None) -> dict:
    """One SQS message per key, built from the real sqs_s3_put.json record, about each key's current object."""
    records = []
    for index, key in enumerate(keys):
        given = (etags or {}).get(key)
        head: dict[str, Any] = {"ETag": given, "ContentLength": 1} if given else s3.head_object(Bucket=BUCKET, Key=key)
        notification = json.loads(template["body"])
        s3_part = notification["Records"][0]["s3"]
        s3_part["bucket"]["name"] = BUCKET
        s3_part["object"]["key"] = quote_plus(key, safe="/")  # S3 URL-encodes keys in notifications
        s3_part["object"]["eTag"] = head["ETag"].strip('"')
        s3_part["object"]["size"] = head["ContentLength"]
        if head.get("VersionId"):
            s3_part["object"]["versionId"] = head["VersionId"]
        records.append({**template, "messageId": f"message-{index}", "body": json.dumps(notification)})
    return {"Records": records}


@pytest.fixture
def notify(
    batch_handler: BatchFunction, load_event: Callable[[str], dict], lambda_context: Any, s3: Any
) -> Callable[..., dict]:
    """Put objects (optional), then deliver one SQS message per key, built from the real sqs_s3_put.json event."""

    def deliver(*keys: str, etags: dict[str, str] | None = None) -> dict:
        event = sqs_event(load_event("sqs_s3_put")["Records"][0], s3, *keys, etags=etags)
        return dict(batch_handler.lambda_handler(event, lambda_context))

    return deliver


def put(s3: Any, key: str, lines: list[str]) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body="\n".join(lines).encode())


def read_jsonl(s3: Any, key: str) -> list[dict[str, Any]]:
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines()]


def read_summary(s3: Any, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def outputs(s3: Any, summary_key: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The summary and the results and errors of the run it points at."""
    summary = read_summary(s3, summary_key)
    return summary, read_jsonl(s3, summary["outputs"]["results"]), read_jsonl(s3, summary["outputs"]["errors"])


def all_keys(s3: Any) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def assert_every_row_once(results: list[dict], errors: list[dict], expected_lines: set[int]) -> None:
    lines = [row["line"] for row in results] + [row["line"] for row in errors]
    assert sorted(lines) == sorted(expected_lines)
    assert len(lines) == len(set(lines))


def test_jsonl_good_and_bad_rows(notify: Callable[..., dict], s3: Any, batch_handler: BatchFunction) -> None:
    # given a JSON Lines file with good rows and every kind of bad row
    key = "batch/input/sentiment/reviews 2026-11.jsonl"
    put(
        s3,
        key,
        [
            json.dumps({"id": "r1", "text": "I love this phone"}),
            json.dumps({"text": "no id on this one"}),
            "{not json",
            json.dumps({"id": "r4", "body": "wrong field"}),
            json.dumps({"id": "r5", "text": 42}),
            "",
            json.dumps({"id": "r7", "text": "   "}),
            json.dumps(["a", "list"]),
            json.dumps({"id": 9, "text": "numeric ids are kept"}),
        ],
    )
    # when
    response = notify(key)
    # then
    assert response == {"batchItemFailures": []}
    summary, results, errors = outputs(s3, "batch/output/sentiment/reviews 2026-11.jsonl.summary.json")
    assert (summary["rows"], summary["scored"], summary["failed"]) == (8, 3, 5)
    assert summary["model"] == "sentiment"
    assert summary["version"] == batch_handler.models["sentiment"].version
    assert summary["input"]["key"] == key
    assert summary["input"]["etag"] == s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
    assert summary["timings"]["total_s"] >= summary["timings"]["inference_s"] >= 0
    assert [row["id"] for row in results] == ["r1", 2, 9]
    labels = batch_handler.models["sentiment"].manifest.labels
    for row in results:
        assert row["prediction"]["label"] in labels
        assert sum(row["prediction"]["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    reasons = {row["line"]: row["reason"] for row in errors}
    assert "invalid JSON" in reasons[3]
    assert "missing field 'text'" in reasons[4]
    assert "must be a string" in reasons[5]
    assert "empty" in reasons[7]
    assert "JSON object" in reasons[8]
    assert_every_row_once(results, errors, {1, 2, 3, 4, 5, 7, 8, 9})


def test_predictions_match_the_runtime(notify: Callable[..., dict], s3: Any, batch_handler: BatchFunction) -> None:
    texts = [f"review number {i}, quite {'good' if i % 2 else 'bad'}" for i in range(10)]
    put(s3, "batch/input/sentiment/ten.jsonl", [json.dumps({"id": i, "text": t}) for i, t in enumerate(texts)])
    notify("batch/input/sentiment/ten.jsonl")
    summary, results, _ = outputs(s3, "batch/output/sentiment/ten.jsonl.summary.json")
    # the same chunks the handler scores (an int8 graph quantises activations per batch, so chunking matters)
    size = batch_handler.settings.batch_rows_per_inference
    chunks = [batch_handler.models["sentiment"].predict(texts[i : i + size]) for i in range(0, 10, size)]
    expected_labels = [label for chunk in chunks for label in chunk["label"]]
    assert [row["prediction"]["label"] for row in results] == expected_labels
    got = np.array([list(row["prediction"]["scores"].values()) for row in results])
    np.testing.assert_allclose(got, np.concatenate([chunk["probabilities"] for chunk in chunks]), atol=1e-5)
    assert summary["timings"]["chunks"] == 3  # BATCH_ROWS_PER_INFERENCE=4 in the test environment


def test_csv_with_header(notify: Callable[..., dict], s3: Any) -> None:
    key = "batch/input/sentiment/survey.csv"
    put(s3, key, ["id,text", 'a,"Great, really great"', "b,", "c,too,many,columns", "d,fine"])
    assert notify(key) == {"batchItemFailures": []}
    summary, results, errors = outputs(s3, "batch/output/sentiment/survey.csv.summary.json")
    assert (summary["rows"], summary["scored"], summary["failed"]) == (4, 2, 2)
    assert summary["input"]["format"] == "csv"
    assert [row["id"] for row in results] == ["a", "d"]
    assert {row["line"]: row.get("id") for row in errors} == {3: "b", 4: None}
    assert_every_row_once(results, errors, {2, 3, 4, 5})


def test_digits_jsonl_and_csv(notify: Callable[..., dict], s3: Any) -> None:
    image = (np.arange(64) % 17).tolist()
    put(s3, "batch/input/digits/a.jsonl", [json.dumps({"pixels": image}), json.dumps({"pixels": [1, 2]})])
    put(s3, "batch/input/digits/b.csv", ["id,pixels", f'x,"{json.dumps(image)}"', "y,not-json"])
    assert notify("batch/input/digits/a.jsonl", "batch/input/digits/b.csv") == {"batchItemFailures": []}
    _, from_jsonl, jsonl_errors = outputs(s3, "batch/output/digits/a.jsonl.summary.json")
    _, from_csv, csv_errors = outputs(s3, "batch/output/digits/b.csv.summary.json")
    assert from_jsonl[0]["prediction"] == from_csv[0]["prediction"]
    assert from_jsonl[0]["prediction"]["label"] in [str(d) for d in range(10)]
    assert jsonl_errors[0]["line"] == 2
    assert "JSON array" in csv_errors[0]["reason"]


def test_embeddings_file(notify: Callable[..., dict], s3: Any) -> None:
    put(s3, "batch/input/embeddings/docs.jsonl", [json.dumps({"id": "d1", "text": "a document"})])
    notify("batch/input/embeddings/docs.jsonl")
    _, (row,), _ = outputs(s3, "batch/output/embeddings/docs.jsonl.summary.json")
    assert len(row["prediction"]) == 384
    assert np.linalg.norm(row["prediction"]) == pytest.approx(1.0, abs=1e-4)


def test_duplicate_notification_is_not_scored_twice(
    notify: Callable[..., dict], s3: Any, batch_handler: BatchFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a file already scored
    key = "batch/input/sentiment/once.jsonl"
    put(s3, key, [json.dumps({"text": "only once"})])
    notify(key)
    first = read_summary(s3, "batch/output/sentiment/once.jsonl.summary.json")
    calls: list[Any] = []
    model = batch_handler.models["sentiment"]
    original = model.infer

    def counted(inputs: Any) -> Any:
        calls.append(inputs)
        return original(inputs)

    monkeypatch.setattr(model, "infer", counted)
    # when the same notification (same key and ETag) arrives again
    assert notify(key) == {"batchItemFailures": []}
    # then nothing is scored or rewritten
    assert calls == []
    assert read_summary(s3, "batch/output/sentiment/once.jsonl.summary.json") == first
    # and a new version of the file (new ETag) is scored
    put(s3, key, [json.dumps({"text": "changed"}), json.dumps({"text": "and longer"})])
    notify(key)
    second = read_summary(s3, "batch/output/sentiment/once.jsonl.summary.json")
    assert len(calls) == 1
    assert second["rows"] == 2
    assert second["input"]["etag"] != first["input"]["etag"]


def test_stale_notification_is_skipped(notify: Callable[..., dict], s3: Any) -> None:
    key = "batch/input/sentiment/stale.jsonl"
    put(s3, key, [json.dumps({"text": "current"})])
    assert notify(key, etags={key: "0" * 32}) == {"batchItemFailures": []}
    assert all_keys(s3) == [key]


def test_test_event_is_ignored(
    batch_handler: BatchFunction, load_event: Callable[[str], dict], lambda_context: Any, s3: Any
) -> None:
    assert batch_handler.lambda_handler(load_event("sqs_s3_test_event"), lambda_context) == {"batchItemFailures": []}
    assert all_keys(s3) == []


def test_failing_record_is_reported_while_others_succeed(
    notify: Callable[..., dict], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given two files, and S3 throttling reads of the second (a transient error: retrying can fix it)
    put(s3, "batch/input/sentiment/good.jsonl", [json.dumps({"text": "fine"})])
    put(s3, "batch/input/sentiment/throttled.jsonl", [json.dumps({"text": "fine"})])
    get_object = s3.get_object

    def throttled(**kwargs: Any) -> Any:
        if kwargs["Key"] == "batch/input/sentiment/throttled.jsonl":
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce your request rate."}}, "GetObject")
        return get_object(**kwargs)

    monkeypatch.setattr(s3, "get_object", throttled)
    # when
    response = notify("batch/input/sentiment/good.jsonl", "batch/input/sentiment/throttled.jsonl")
    # then only the throttled message is left for a retry, and it has no summary yet
    assert response == {"batchItemFailures": [{"itemIdentifier": "message-1"}]}
    assert "batch/output/sentiment/good.jsonl.summary.json" in all_keys(s3)
    assert "batch/output/sentiment/throttled.jsonl.summary.json" not in all_keys(s3)
    # and the retry, with S3 well again, scores it
    monkeypatch.setattr(s3, "get_object", get_object)
    assert notify("batch/input/sentiment/throttled.jsonl") == {"batchItemFailures": []}
    assert read_summary(s3, "batch/output/sentiment/throttled.jsonl.summary.json")["scored"] == 1


def test_backend_failure_leaves_no_partial_result(
    notify: Callable[..., dict], s3: Any, batch_handler: BatchFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a backend that fails on the second chunk
    key = "batch/input/sentiment/big.jsonl"
    put(s3, key, [json.dumps({"text": f"row {i}"}) for i in range(9)])
    backend = batch_handler.models["sentiment"].backend
    original, calls = backend.run, []

    def flaky(feeds: dict) -> dict:
        calls.append(1)
        if len(calls) > 1:
            raise BackendError("endpoint unavailable")
        return original(feeds)

    monkeypatch.setattr(backend, "run", flaky)
    # when / then: with every record failed, Powertools raises so Lambda retries the whole batch
    with pytest.raises(BatchProcessingError, match="All records failed"):
        notify(key)
    # and no output, errors or summary object exists, nor a pending multipart upload
    (claim,) = [item for item in all_keys(s3) if item != key]
    assert claim.endswith(".claim.json")
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    # and the run let go of its lease, so the retry need not wait for this invocation's deadline
    assert json.loads(s3.get_object(Bucket=BUCKET, Key=claim)["Body"].read())["expires_at"] == 0


def test_outputs_are_never_under_the_input_prefix(notify: Callable[..., dict], s3: Any) -> None:
    put(s3, "batch/input/sentiment/nested/dir/file.jsonl", [json.dumps({"text": "x"})])
    notify("batch/input/sentiment/nested/dir/file.jsonl")
    summary = read_summary(s3, "batch/output/sentiment/nested/dir/file.jsonl.summary.json")
    run = f"batch/output/sentiment/nested/dir/file.jsonl.runs/{summary['run_id']}"
    assert summary["outputs"] == {"bucket": BUCKET, "results": f"{run}.out.jsonl", "errors": f"{run}.errors.jsonl"}
    written = [key for key in all_keys(s3) if key != "batch/input/sentiment/nested/dir/file.jsonl"]
    assert set(written) == {
        f"batch/output/sentiment/nested/dir/file.jsonl.runs/{summary['idempotency_key']}.claim.json",
        f"{run}.errors.jsonl",
        f"{run}.out.jsonl",
        "batch/output/sentiment/nested/dir/file.jsonl.summary.json",
    }


def test_moto_notifications_end_to_end(
    batch_handler: BatchFunction, lambda_context: Any, s3: Any, load_event: Callable[[str], dict]
) -> None:
    """The messages moto itself posts (as the local stack's poller sees them): a TestEvent, then the Put."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = sqs.create_queue(QueueName="batch")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "batch/input/"}]}},
                }
            ]
        },
    )
    put(s3, "batch/input/sentiment/from moto.jsonl", [json.dumps({"text": "hello"}), "oops"])
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    template = load_event("sqs_s3_put")["Records"][0]
    records = [{**template, "messageId": m["MessageId"], "body": m["Body"]} for m in messages]
    assert batch_handler.lambda_handler({"Records": records}, lambda_context) == {"batchItemFailures": []}
    summary = read_summary(s3, "batch/output/sentiment/from moto.jsonl.summary.json")
    assert (summary["rows"], summary["scored"], summary["failed"]) == (2, 1, 1)
