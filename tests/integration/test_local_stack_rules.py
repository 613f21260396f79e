"""The local stack is at least as strict as AWS, and each rule is shown both ways: what it allows, what it stops.

- IAM: moto checks every request; each function signs as its own role, holding the statements CDK synthesizes.
- Lambda: an invocation past its timeout is stopped and its message returns to the queue; a crash likewise.
- API Gateway: a request matching no route is answered by the gateway itself, in JSON.
- SageMaker: the endpoint refuses batches over the packaged Triton `max_batch_size` and bodies over 6 MB.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from catalog import load_catalog
from functions.runtime.tensors import encode_request
from local.clients import client
from local.config import BOOTSTRAP, LocalConfig
from local.policies import Statements, synthesized_statements
from local.stack import LocalStack
from tests.integration.stack_client import (
    PLATFORM,
    WAIT_S,
    assert_every_row_once,
    http,
    score_file,
    wait_for_object,
)

CATALOG = load_catalog()


def local_config(bucket: str, timeout_s: int = 3, workers: int | None = None) -> LocalConfig:
    """Free ports, and a batch timeout and visibility timeout short enough for redeliveries within a test."""
    return LocalConfig(
        batch_concurrency=workers,
        api_port=0,
        aws_port=0,
        sagemaker_port=0,
        bucket=bucket,
        visibility_timeout_s=timeout_s,
        batch_timeout_s=timeout_s,
        poll_wait_s=1,
    )


@pytest.fixture(scope="module")
def stack(packages: dict[str, Path]) -> Iterator[LocalStack]:
    with LocalStack(local_config("model-serving-rules"), packages) as running:
        yield running


@pytest.fixture(scope="module")
def s3(stack: LocalStack) -> Any:
    assert stack.info is not None
    return client("s3", stack.info.aws_url, stack.info.admin)


def digits_file(rows: int) -> bytes:
    from sklearn.datasets import load_digits

    images = load_digits().images
    lines = [json.dumps({"id": n, "pixels": images[n % len(images)].tolist()}) for n in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def dead_letters(stack: LocalStack, sqs: Any) -> list[dict[str, Any]]:
    """Wait (bounded) for messages on the dead-letter queue."""
    assert stack.info is not None
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        messages = sqs.receive_message(
            QueueUrl=stack.info.resources.dead_letter_queue_url, WaitTimeSeconds=1, MaxNumberOfMessages=10
        ).get("Messages", [])
        if messages:
            return messages
    return []


def output_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def handler_errors(stack: LocalStack) -> int:
    return sum(poller.stats.handler_errors for poller in stack.pollers)


def crash_busy_workers(stack: LocalStack) -> None:
    """Kill every batch execution environment running an invocation now, as a crash or out-of-memory would."""
    for function in stack.batch_functions:
        if function.busy:
            function.crash()


# --- IAM -------------------------------------------------------------------------------------------------------------


def test_moto_refuses_requests_from_unknown_identities(stack: LocalStack, s3: Any) -> None:
    assert stack.info is not None
    assert s3.list_objects_v2(Bucket=stack.info.resources.bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(ClientError, match=r"InvalidAccessKeyId|AccessDenied|InvalidClientTokenId"):
        client("s3", stack.info.aws_url, BOOTSTRAP).list_objects_v2(Bucket=stack.info.resources.bucket)


def without_output_reads(statements: Statements) -> Statements:
    """The batch statements as CDK synthesized them before the fix: no s3:GetObject on the output prefix."""
    batch = []
    for statement in statements["batch"]:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if any(PLATFORM.batch_output_prefix in str(resource) for resource in resources):
            actions = [action for action in actions if not action.startswith("s3:GetObject")]
        batch.append({**statement, "Action": actions})
    return {**statements, "batch": batch}


def test_the_batch_role_as_synthesized_scores_a_file(stack: LocalStack, s3: Any) -> None:
    # the grant the batch function needs (it reads its own summary on the output prefix) is in the synthesized policy
    summary, _ = score_file(stack, s3, "digits/rules/granted.jsonl", digits_file(5))
    assert (summary["rows"], summary["scored"]) == (5, 5)


def test_a_grant_taken_from_the_batch_role_fails_every_file(packages: dict[str, Path]) -> None:
    # given the synthesized statements less s3:GetObject on the output prefix (the policy CDK used to synthesize)
    statements = without_output_reads(synthesized_statements(packages))
    with LocalStack(local_config("model-serving-rules-denied"), packages, statements=statements) as denied:
        assert denied.info is not None
        admin_s3 = client("s3", denied.info.aws_url, denied.info.admin)
        bucket = denied.info.resources.bucket
        # when a file arrives
        admin_s3.put_object(Bucket=bucket, Key=f"{PLATFORM.batch_input_prefix}digits/denied.jsonl", Body=digits_file(3))
        # then every delivery fails with AccessDenied, the message is dead-lettered and no summary is ever written
        dead = dead_letters(denied, client("sqs", denied.info.aws_url, denied.info.admin))
        assert dead, "the file's notification should end in the dead-letter queue"
        assert "denied.jsonl" in dead[0]["Body"]
        assert not [key for key in output_keys(admin_s3, bucket, PLATFORM.batch_output_prefix) if "denied" in key]


# --- Lambda: timeouts and crashes ------------------------------------------------------------------------------------


def test_an_invocation_past_its_timeout_is_stopped_and_its_message_returns(packages: dict[str, Path]) -> None:
    # given one batch worker with a 1 s timeout and a file that needs longer, in one invocation (no fan-out)
    one_shard = CATALOG.platform.model_copy(update={"batch_shard_bytes": 2**40})
    catalog = CATALOG.model_copy(update={"platform": one_shard})
    config = local_config("model-serving-rules-timeout", timeout_s=1, workers=1)
    with LocalStack(config, packages, catalog) as short:
        assert short.info is not None
        admin_s3 = client("s3", short.info.aws_url, short.info.admin)
        bucket = short.info.resources.bucket
        admin_s3.put_object(
            Bucket=bucket, Key=f"{PLATFORM.batch_input_prefix}digits/slow.jsonl", Body=digits_file(60_000)
        )
        # then each delivery is stopped at 1 s, redelivered, and finally dead-lettered, with no outputs visible
        dead = dead_letters(short, client("sqs", short.info.aws_url, short.info.admin))
        assert dead
        assert "slow.jsonl" in dead[0]["Body"]
        assert sum(function.timeouts for function in short.batch_functions) >= PLATFORM.queue_max_receive_count
        outputs = output_keys(admin_s3, bucket, f"{PLATFORM.batch_output_prefix}digits/slow.jsonl")
        assert not [key for key in outputs if key.endswith((".summary.json", ".out.jsonl", ".errors.jsonl"))]


def test_a_crash_mid_file_leaves_exactly_one_complete_output_set(stack: LocalStack, s3: Any) -> None:
    # given a file that takes the batch function a while
    assert stack.info is not None
    bucket, rows = stack.info.resources.bucket, 5_000
    key = f"{PLATFORM.batch_input_prefix}digits/rules/crash.jsonl"
    crashes_before = handler_errors(stack)
    s3.put_object(Bucket=bucket, Key=key, Body=digits_file(rows))
    # when the function dies while its results upload is open
    deadline = time.monotonic() + WAIT_S
    while not s3.list_multipart_uploads(Bucket=bucket).get("Uploads") and time.monotonic() < deadline:
        time.sleep(0.05)
    crash_busy_workers(stack)
    # then the redelivery scores the whole file once: every row in exactly one output, no row twice
    summary = json.loads(
        wait_for_object(s3, bucket, f"{PLATFORM.batch_output_prefix}digits/rules/crash.jsonl.summary.json")
    )
    assert handler_errors(stack) > crashes_before
    assert_every_row_once(s3, summary, list(range(1, rows + 1)))


# --- API Gateway -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nowhere"), ("PUT", "/v2/health/ready"), ("POST", "/v2/models/nope/infer"), ("DELETE", "/v2")],
)
def test_a_request_matching_no_route_is_answered_by_the_gateway(stack: LocalStack, method: str, path: str) -> None:
    status, headers, body = http(stack, method, path)
    assert (status, body) == (404, {"message": "Not Found"})
    assert headers["content-type"] == "application/json"


def test_a_routed_request_reaches_the_function(stack: LocalStack) -> None:
    status, _, body = http(stack, "GET", "/v2/models/nope")  # no such route key either: the gateway's 404
    assert (status, body) == (404, {"message": "Not Found"})
    status, _, body = http(stack, "GET", "/v2/models/digits/versions/0/ready")  # routed: the function's own 404
    assert status == 404
    assert "error" in body


def test_an_unknown_method_gets_json_not_an_html_page(stack: LocalStack) -> None:
    assert stack.info is not None
    request = urllib.request.Request(stack.info.api_url + "/v2", method="TRACE")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code in (404, 501)
    assert raised.value.headers["content-type"] == "application/json"
    assert "message" in json.loads(raised.value.read())


# --- SageMaker endpoint ----------------------------------------------------------------------------------------------


def invoke_endpoint(stack: LocalStack, batch: int) -> tuple[int, dict[str, Any]]:
    """A v2 request of `batch` token sequences straight to the endpoint, as the SageMaker backend sends it."""
    assert stack.info is not None
    endpoint = stack.info.sagemaker_endpoints["embeddings"]
    feeds = {"input_ids": np.tile([101, 7592, 2088, 102], (batch, 1)), "attention_mask": np.ones((batch, 4), np.int64)}
    body = encode_request(feeds, ["sentence_embedding"])
    request = urllib.request.Request(
        f"{stack.info.sagemaker_url}/endpoints/{endpoint}/invocations",
        data=body,
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_endpoint_enforces_the_packaged_max_batch_size(stack: LocalStack) -> None:
    limit = CATALOG.model("embeddings").sagemaker.max_batch_size
    status, _ = invoke_endpoint(stack, limit)
    assert status == 200
    status, answer = invoke_endpoint(stack, limit + 1)
    assert status == 424
    assert f"batch-size must be <= {limit}" in answer["message"]


def test_the_gpu_front_splits_requests_to_the_endpoints_limit(stack: LocalStack) -> None:
    count = CATALOG.model("embeddings").sagemaker.max_batch_size * 2 + 3
    texts = [f"sentence number {n}" for n in range(count)]
    status, _, answer = http(stack, "POST", "/v1/models/embeddings:predict", {"instances": texts})
    assert status == 200, answer
    vectors = np.asarray(answer["predictions"])
    assert vectors.shape == (count, 384)
