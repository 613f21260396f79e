"""Why batch idempotency is built on S3 conditional writes, not on Powertools Idempotency with a DynamoDB table: both
designs, run through the two failure modes that decide between them (moto for S3 and DynamoDB).

1. A run killed midway. Powertools leaves its record INPROGRESS, and refuses retries until the in-progress expiry: the
   killed invocation's deadline when the Lambda context is registered, otherwise the record's whole expiry (an hour by
   default). The S3 lease ends at the invocation's deadline too. A draw, provided the context is registered.
2. An older version of a file finishing after a newer one. Idempotency records are per input version, so neither run
   blocks the other, and the older summary, written last, wins. Only a conditional write on the summary itself can
   refuse it. So the DynamoDB design needs S3 conditional writes anyway, and its table adds a second store (an IAM
   grant, a stack resource, a local-stack stand-in, a record that can disagree with S3) and no guarantee.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from moto import mock_aws

from functions.batch.idempotency import RunInProgressError, claim, commit
from functions.batch.layout import BatchObject
from functions.batch.summary import Summary, SummaryInput, SummaryOutputs, SummaryTimings
from local.lambda_context import LambdaContext

BUCKET, KEY, SUMMARY = (
    "model-serving-batch",
    "batch/input/sentiment/a.jsonl",
    "batch/output/sentiment/a.jsonl.summary.json",
)
DEADLINE_S = 1.0


class Killed(BaseException):
    """A timeout or an out-of-memory kill, seen from inside: nothing after it runs."""


@pytest.fixture
def aws() -> Iterator[tuple[Any, DynamoDBPersistenceLayer]]:
    """moto's S3 with the batch bucket, and a Powertools idempotency table."""
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        boto3.client("dynamodb", region_name="us-east-1").create_table(
            TableName="idempotency",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield s3, DynamoDBPersistenceLayer(table_name="idempotency")


def dynamodb_design(store: DynamoDBPersistenceLayer, work: Callable[[dict], None], deadline: bool) -> Callable:
    """The alternative: the file's work wrapped in Powertools Idempotency, keyed by the input version."""
    config = IdempotencyConfig()
    if deadline:
        config.register_lambda_context(cast(Any, LambdaContext("batch", 2048, timeout_s=DEADLINE_S)))

    @idempotent_function(data_keyword_argument="version", persistence_store=store, config=config)
    def score(version: dict) -> dict:
        work(version)
        return {"scored": version["etag"]}

    return score


def kill(version: dict) -> None:
    raise Killed


@pytest.mark.parametrize("deadline", [True, False], ids=["context-registered", "no-context"])
def test_killed_run_dynamodb_design_refuses_retries_until_the_in_progress_record_expires(
    aws: tuple[Any, DynamoDBPersistenceLayer], deadline: bool
) -> None:
    _, store = aws
    with pytest.raises(Killed):
        dynamodb_design(store, kill, deadline)(version={"etag": "e1"})
    retry = dynamodb_design(store, lambda version: None, deadline)
    with pytest.raises(IdempotencyAlreadyInProgressError):
        retry(version={"etag": "e1"})
    time.sleep(DEADLINE_S + 0.1)
    if deadline:
        assert retry(version={"etag": "e1"}) == {"scored": "e1"}
    else:  # held for the record's whole expiry: five SQS receives can pass first, and the file ends in the DLQ
        with pytest.raises(IdempotencyAlreadyInProgressError):
            retry(version={"etag": "e1"})


def test_killed_run_s3_design_refuses_retries_until_the_killed_invocations_deadline(
    aws: tuple[Any, DynamoDBPersistenceLayer],
) -> None:
    s3, _ = aws
    lease, now = "batch/output/sentiment/a.jsonl.runs/k.claim.json", time.time()
    claim(s3, BUCKET, lease, "killed-run", until=now + DEADLINE_S, now=now)  # then killed: it never releases
    with pytest.raises(RunInProgressError):
        claim(s3, BUCKET, lease, "early-retry", until=now + 25, now=time.time())
    time.sleep(DEADLINE_S + 0.1)
    assert claim(s3, BUCKET, lease, "late-retry", until=time.time() + 25, now=time.time())


def summary_of(obj: BatchObject) -> Summary:
    timings = SummaryTimings(
        started_at="t", finished_at="t", total_s=0, inference_s=0, chunks=0, rows_per_inference=4
    )  # fmt: skip
    outputs = SummaryOutputs(bucket=BUCKET, results=f"{obj.etag}.out.jsonl", errors=f"{obj.etag}.errors.jsonl")
    return Summary(
        model="sentiment",
        version="1",
        idempotency_key=obj.etag,
        run_id=obj.etag,
        input=SummaryInput(bucket=BUCKET, key=KEY, etag=obj.etag),
        outputs=outputs,
        timings=timings,
    )


def upload(s3: Any, text: str) -> BatchObject:
    etag = s3.put_object(Bucket=BUCKET, Key=KEY, Body=json.dumps({"text": text}).encode())["ETag"].strip('"')
    return BatchObject(BUCKET, KEY, etag)


def test_older_version_finishing_last_dynamodb_design_lets_it_replace_the_newer(
    aws: tuple[Any, DynamoDBPersistenceLayer],
) -> None:
    s3, store = aws
    write = {"v1": summary_of(upload(s3, "version one")), "v2": summary_of(upload(s3, "version two"))}

    def put_summary(version: dict) -> None:  # what the design writes once its lock is held
        body = write[version["name"]].model_dump_json().encode()
        s3.put_object(Bucket=BUCKET, Key=SUMMARY, Body=body)

    score = dynamodb_design(store, put_summary, deadline=True)
    score(version={"name": "v2", "etag": write["v2"].input.etag})  # the newer version's run finishes first
    score(version={"name": "v1", "etag": write["v1"].input.etag})  # the older one's, started earlier, last
    written = json.loads(s3.get_object(Bucket=BUCKET, Key=SUMMARY)["Body"].read())
    assert written["input"]["etag"] == write["v1"].input.etag  # the failure: the summary describes a replaced file


def test_older_version_finishing_last_s3_design_commits_nothing(aws: tuple[Any, DynamoDBPersistenceLayer]) -> None:
    s3, _ = aws
    older = upload(s3, "version one")
    newer = upload(s3, "version two")
    assert commit(s3, BUCKET, SUMMARY, summary_of(newer), newer) == "committed"
    assert commit(s3, BUCKET, SUMMARY, summary_of(older), older) == "superseded"
    written = json.loads(s3.get_object(Bucket=BUCKET, Key=SUMMARY)["Body"].read())
    assert written["input"]["etag"] == newer.etag
