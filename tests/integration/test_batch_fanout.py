"""A file bigger than one shard, against moto S3 and SQS in process: planned, scored by shard tasks the function sends
to its own queue, assembled into the usual three outputs; the same rows as one invocation would give, once each.

The queue is drained here as the event source mapping would (one message per invocation); the local stack's own
poller and concurrent workers are in test_local_stack_fanout.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from moto import mock_aws

from functions.batch.app import BatchFunction, create_batch_handler
from functions.batch.notifications import BatchMessage, ShardTask
from functions.batch.output import MultipartWriter
from functions.runtime.models import ServedModel
from functions.runtime.settings import Settings
from local.lambda_context import LambdaContext
from local.queue_poller import lambda_record
from tests.integration.test_batch_handler import BUCKET, all_keys, assert_every_row_once, outputs, sqs_event

SHARD_BYTES = 600
TWEETS = ["I love this phone", "worst service ever", "it is a phone", "great, thanks!", 'she said "fine"']


@pytest.fixture
def aws() -> Iterator[tuple[Any, Any, str]]:
    with mock_aws():
        s3, sqs = boto3.client("s3", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield s3, sqs, sqs.create_queue(QueueName="batch", Attributes={"VisibilityTimeout": "0"})["QueueUrl"]


def build(settings: Settings, models: Mapping[str, ServedModel], aws: tuple[Any, Any, str], **update: Any) -> Any:
    s3, sqs, queue_url = aws
    fanning = settings.model_copy(update={"batch_shard_bytes": SHARD_BYTES, "batch_queue_url": queue_url, **update})
    return create_batch_handler(fanning, models, s3, sqs)


@pytest.fixture
def function(serving_settings: Settings, loaded_models: Mapping[str, ServedModel], aws: Any) -> BatchFunction:
    return build(serving_settings, loaded_models, aws)


@pytest.fixture
def run(aws: tuple[Any, Any, str], load_event: Callable[[str], dict]) -> Callable[..., list[dict]]:
    """Deliver the notification for `key`, then invoke once per queued message until the queue is empty; returns the
    tasks the function sent (each message is deleted after its invocation unless it failed)."""
    s3, sqs, queue_url = aws

    def drain(function: BatchFunction, key: str, timeout_s: float = 25.0, repeat: int = 1) -> list[dict]:
        context = LambdaContext("model-serving-test", 3008, timeout_s)
        assert function.lambda_handler(sqs_event(load_event("sqs_s3_put")["Records"][0], s3, key), context) == {
            "batchItemFailures": []
        }
        tasks = []
        while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, AttributeNames=["All"]).get(
            "Messages", []
        ):
            tasks.append(json.loads(messages[0]["Body"]))
            event = {"Records": [lambda_record(messages[0], "arn:aws:sqs:us-east-1:123456789012:batch")]}
            for _ in range(repeat):  # a message delivered more than once
                context = LambdaContext("model-serving-test", 3008, timeout_s)
                assert function.lambda_handler(event, context) == {"batchItemFailures": []}
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=messages[0]["ReceiptHandle"])
        return tasks

    return drain


def tweets(rows: int) -> list[str]:
    return [json.dumps({"id": f"t{n}", "text": f"{TWEETS[n % len(TWEETS)]} #{n}"}) for n in range(rows)]


def put_lines(s3: Any, key: str, lines: list[str]) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=("\n".join(lines) + "\n").encode())


def test_the_shard_task_event_parses_as_our_own_message_not_a_notification(load_event: Callable[[str], dict]) -> None:
    record = BatchMessage.model_validate(load_event("sqs_batch_shard_task")["Records"][0])
    assert isinstance(record.body, ShardTask)
    assert (record.body.task, record.body.shard, record.body.line) == ("score", 3, 34953)
    notification = BatchMessage.model_validate(load_event("sqs_s3_put")["Records"][0])
    assert not isinstance(notification.body, ShardTask)


def test_a_big_file_fans_out_and_comes_back_whole_in_line_order(
    function: BatchFunction, run: Callable[..., list[dict]], aws: tuple[Any, Any, str]
) -> None:
    # given a JSON Lines file of several shards, with bad rows among the good ones
    s3 = aws[0]
    lines = tweets(60)
    lines[7], lines[31] = "{not json", json.dumps({"id": "no-text"})
    put_lines(s3, "batch/input/sentiment/big.jsonl", lines)
    # when its notification and every task it causes are delivered
    tasks = run(function, "batch/input/sentiment/big.jsonl")
    # then the one summary counts every row once, the outputs are in line order, and each shard was its own task
    summary, results, errors = outputs(s3, "batch/output/sentiment/big.jsonl.summary.json")
    assert_every_row_once(results, errors, set(range(1, 61)))
    assert [row["line"] for row in results] == sorted(row["line"] for row in results)
    assert [row["line"] for row in errors] == [8, 32]
    assert summary["shards"] == len([task for task in tasks if task["task"] == "score"]) > 3
    scoring = [entry for entry in summary["invocations"] if entry["stage"] == "score"]
    assert sum(entry["rows"] for entry in scoring) == summary["rows"] == 60
    assert next(entry["stage"] for entry in summary["invocations"]) == "plan"
    # and the working objects are gone; the status object says it is over
    keys = all_keys(s3)
    assert not [key for key in keys if f".runs/{summary['run_id']}/" in key]
    status = json.loads(s3.get_object(Bucket=BUCKET, Key="batch/output/sentiment/big.jsonl.status.json")["Body"].read())
    assert (status["status"], status["shards_done"], status["rows"]) == ("complete", summary["shards"], 60)


def test_fanned_out_results_equal_one_invocation_s(
    serving_settings: Settings,
    loaded_models: Mapping[str, ServedModel],
    run: Callable[..., list[dict]],
    aws: tuple[Any, Any, str],
) -> None:
    # given a CSV whose quoted fields hold newlines around where the shards are cut, as two files of equal content
    s3 = aws[0]
    records = ["id,text"]
    for n in range(120):
        text = (
            f'"{TWEETS[n % 5].replace(chr(34), chr(34) * 2)}\nline two of {n}\n\n""quoted"" end"' if n % 3 else "plain"
        )
        records.append(f"r{n},{text}")
    body = ("\n".join(records) + "\n").encode()
    for key in ("batch/input/sentiment/letters.csv", "batch/input/sentiment/whole/letters.csv"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    # when one is fanned out and the other is scored by an invocation with a shard size larger than the file, each
    # row inferred alone (a dynamically quantised graph's scores depend on the rows batched with it, so only
    # one-row inferences make the two paths' scores comparable exactly)
    assert len(body) > 3 * SHARD_BYTES
    alone = {"batch_rows_per_inference": 1}
    run(build(serving_settings, loaded_models, aws, **alone), "batch/input/sentiment/letters.csv")
    whole = build(serving_settings, loaded_models, aws, batch_shard_bytes=len(body), **alone)
    assert run(whole, "batch/input/sentiment/whole/letters.csv") == []  # no task: the single-invocation path
    # then both give the same rows, and only the fanned-out summary has shards
    fanned, results, errors = outputs(s3, "batch/output/sentiment/letters.csv.summary.json")
    single, single_results, single_errors = outputs(s3, "batch/output/sentiment/whole/letters.csv.summary.json")
    assert [(row["id"], row["line"]) for row in results] == [(row["id"], row["line"]) for row in single_results]
    assert [row["prediction"] for row in results] == [row["prediction"] for row in single_results]
    assert errors == single_errors == []
    assert [row["id"] for row in results] == [f"r{n}" for n in range(120)]
    assert fanned["shards"] > 3
    assert "shards" not in single
    assert "invocations" not in single


def test_an_invocation_near_its_timeout_hands_the_rest_to_a_continuation(
    serving_settings: Settings,
    loaded_models: Mapping[str, ServedModel],
    aws: tuple[Any, Any, str],
    run: Callable[..., list[dict]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a model that takes 0.1 s a chunk, and a 1 s function timeout (hand-off at 0.4 s)
    model = loaded_models["digits"]
    predict = model.predict_instances

    def slow(instances: list[Any]) -> Any:
        time.sleep(0.1)
        return predict(instances)

    monkeypatch.setattr(model, "predict_instances", slow)
    function = build(serving_settings, loaded_models, aws, function_timeout_s=1.0, batch_shard_bytes=4096)
    image = json.dumps([n % 17 for n in range(64)])
    put_lines(aws[0], "batch/input/digits/slow.jsonl", [f'{{"id": {n}, "pixels": {image}}}' for n in range(80)])
    # when it is scored
    run(function, "batch/input/digits/slow.jsonl", timeout_s=1.0)
    # then shards were continued, no invocation came near its timeout, and every row is there once
    summary, results, errors = outputs(aws[0], "batch/output/digits/slow.jsonl.summary.json")
    assert_every_row_once(results, errors, set(range(1, 81)))
    assert summary["scored"] == 80
    scoring = [entry for entry in summary["invocations"] if entry["stage"] == "score"]
    assert len(scoring) > summary["shards"]
    assert max(entry["duration_s"] for entry in summary["invocations"]) < 0.8


def test_every_task_delivered_twice_still_gives_every_row_once(
    function: BatchFunction, run: Callable[..., list[dict]], aws: tuple[Any, Any, str]
) -> None:
    put_lines(aws[0], "batch/input/sentiment/twice.jsonl", tweets(40))
    run(function, "batch/input/sentiment/twice.jsonl", repeat=2)
    summary, results, errors = outputs(aws[0], "batch/output/sentiment/twice.jsonl.summary.json")
    assert_every_row_once(results, errors, set(range(1, 41)))
    assert summary["scored"] == 40


def test_a_file_that_cannot_be_planned_gets_one_failed_summary(
    function: BatchFunction, run: Callable[..., list[dict]], aws: tuple[Any, Any, str]
) -> None:
    s3 = aws[0]
    key = "batch/input/sentiment/table.parquet"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"PAR1" * 1000, ContentType="application/octet-stream")
    assert run(function, key) == []  # no task sent, the message is not retried
    summary = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{key}.summary.json".replace("input", "output"))["Body"].read()
    )
    assert summary["status"] == "failed"
    assert "cannot tell the format" in summary["reason"]


def test_parts_of_5_mib_or_more_are_copied_by_s3_itself_and_the_rest_streamed(
    aws: tuple[Any, Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given parts of every size, a big one right after a small one (the buffer must be topped up before a copy)
    s3 = aws[0]
    sizes = {"a": 6 * 2**20 + 3, "b": 1000, "c": 14 * 2**20, "d": 10, "e": 5 * 2**20 - 1}
    bodies = {name: bytes([65 + n]) * size for n, (name, size) in enumerate(sizes.items())}
    for name, body in bodies.items():
        s3.put_object(Bucket=BUCKET, Key=f"parts/{name}", Body=body)
    copies: list[str] = []
    copy = s3.upload_part_copy

    def counted_copy(**request: Any) -> Any:
        copies.append(request["CopySourceRange"])
        return copy(**request)

    monkeypatch.setattr(s3, "upload_part_copy", counted_copy)
    # when they are appended in order
    writer = MultipartWriter(s3, BUCKET, "assembled.jsonl")
    for name, size in sizes.items():
        writer.append_object(f"parts/{name}", size)
    writer.complete()
    # then the object is their concatenation, and S3 copied the big ones' bytes (after the buffer's top-up)
    assert s3.get_object(Bucket=BUCKET, Key="assembled.jsonl")["Body"].read() == b"".join(bodies.values())
    assert copies == [f"bytes=0-{6 * 2**20 + 2}", f"bytes={8 * 2**20 - 1000}-{14 * 2**20 - 1}"]


@pytest.mark.parametrize("parks", [True, False])
def test_an_assembly_near_its_timeout_parks_and_a_continuation_finishes_it(
    serving_settings: Settings,
    loaded_models: Mapping[str, ServedModel],
    aws: tuple[Any, Any, str],
    run: Callable[..., list[dict]],
    monkeypatch: pytest.MonkeyPatch,
    parks: bool,
) -> None:
    # given parts that take 0.1 s each to append, two dozen of them, and a 2 s function timeout (hand-off at 0.8 s:
    # parking takes a few S3 and SQS calls, up to half a second on a loaded CI machine)
    append = MultipartWriter.append_object

    def slow_append(self: MultipartWriter, key: str, size: int) -> None:
        time.sleep(0.1)
        append(self, key, size)

    monkeypatch.setattr(MultipartWriter, "append_object", slow_append)
    if not parks:  # the guard removed: the assembler never looks at its clock
        monkeypatch.setattr("functions.batch.fanout.Clock.due", lambda self: False)
    function = build(serving_settings, loaded_models, aws, function_timeout_s=2.0)
    put_lines(aws[0], "batch/input/sentiment/assembled.jsonl", tweets(320))
    # when it is scored
    tasks = run(function, "batch/input/sentiment/assembled.jsonl", timeout_s=2.0)
    # then the outputs are whole either way
    summary, results, errors = outputs(aws[0], "batch/output/sentiment/assembled.jsonl.summary.json")
    assert_every_row_once(results, errors, set(range(1, 321)))
    assert [row["id"] for row in results] == [f"t{n}" for n in range(320)]
    assembling = [entry for entry in summary["invocations"] if entry["stage"] == "assemble"]
    longest = max(entry["duration_s"] for entry in assembling)
    if parks:  # but only a parked assembly keeps every invocation well inside its timeout
        assert len(assembling) >= 2
        assert sum(task["task"] == "assemble" for task in tasks) == len(assembling) - 1
        assert longest < 1.6
        working = f".runs/{summary['run_id']}/"  # parts, carries and the assembly state: deleted at the end
        assert not [key for key in all_keys(aws[0]) if working in key]
    else:
        assert summary["shards"] >= 24
        assert len(assembling) == 1
        assert longest > 2.0


def test_a_continuation_that_finds_the_assembly_lease_held_is_retried_not_dropped(
    serving_settings: Settings,
    loaded_models: Mapping[str, ServedModel],
    aws: tuple[Any, Any, str],
    load_event: Callable[[str], dict],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given an assembly that parks, and a parker whose lease stays held (until its own deadline) when its
    # continuation arrives, as happens when the continuation is picked up before the release lands
    s3, sqs, queue_url = aws
    append = MultipartWriter.append_object

    def slow_append(self: MultipartWriter, key: str, size: int) -> None:
        time.sleep(0.1)
        append(self, key, size)

    monkeypatch.setattr(MultipartWriter, "append_object", slow_append)
    monkeypatch.setattr("functions.batch.fanout.release", lambda *args, **kwargs: None)
    function = build(serving_settings, loaded_models, aws, function_timeout_s=1.0)
    put_lines(s3, "batch/input/sentiment/held.jsonl", tweets(160))
    notification = sqs_event(load_event("sqs_s3_put")["Records"][0], s3, "batch/input/sentiment/held.jsonl")
    function.lambda_handler(notification, LambdaContext("model-serving-test", 3008, 1.0))
    # when the queue is drained as the event source mapping would, a failed message staying on the queue
    retried, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline and (
        messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, AttributeNames=["All"]).get(
            "Messages", []
        )
    ):
        event = {"Records": [lambda_record(messages[0], "arn:aws:sqs:us-east-1:123456789012:batch")]}
        try:  # a batch whose every record failed is an invocation error: the message stays, as for a partial failure
            failed = function.lambda_handler(event, LambdaContext("model-serving-test", 3008, 1.0))["batchItemFailures"]
        except BatchProcessingError:
            failed = True
        if failed:
            retried += json.loads(messages[0]["Body"])["task"] == "assemble"
            continue  # visibility timeout 0: delivered again at once
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=messages[0]["ReceiptHandle"])
    # then the continuation was retried until the lease ended, and the file still came back whole
    assert retried >= 1
    _, results, errors = outputs(s3, "batch/output/sentiment/held.jsonl.summary.json")
    assert_every_row_once(results, errors, set(range(1, 161)))
