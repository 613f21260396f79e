"""A big file on the local stack: LOCAL_BATCH_CONCURRENCY workers (each its own process under the batch role, with
the strict timeouts) score its shards through the very code path Lambda runs, and a worker killed mid-file changes
nothing a user sees: one complete output set, every input line once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from catalog import load_catalog
from local.clients import client
from local.config import LocalConfig
from local.stack import LocalStack
from tests.integration.stack_client import PLATFORM, WAIT_S, assert_every_row_once, score_file, wait_for_object
from tests.integration.test_local_stack_rules import crash_busy_workers, digits_file, handler_errors

TIMEOUT_S = 3
SHARD_BYTES = 64 * 1024
WORKERS = 2


@pytest.fixture(scope="module")
def stack(packages: dict[str, Path]) -> Iterator[LocalStack]:
    catalog = load_catalog()
    catalog = catalog.model_copy(
        update={"platform": catalog.platform.model_copy(update={"batch_shard_bytes": SHARD_BYTES})}
    )
    config = LocalConfig(
        api_port=0,
        aws_port=0,
        sagemaker_port=0,
        bucket="model-serving-fanout",
        visibility_timeout_s=TIMEOUT_S,
        batch_timeout_s=TIMEOUT_S,
        poll_wait_s=1,
        batch_concurrency=WORKERS,
    )
    with LocalStack(config, {"digits": packages["digits"]}, catalog) as running:
        yield running


@pytest.fixture(scope="module")
def s3(stack: LocalStack) -> Any:
    assert stack.info is not None
    return client("s3", stack.info.aws_url, stack.info.admin)


def test_concurrent_workers_score_a_big_file_in_shards(stack: LocalStack, s3: Any) -> None:
    # given a file of many shards
    rows = 4_000
    body = digits_file(rows)
    assert len(body) > 10 * SHARD_BYTES
    invocations_before = [function.invocations for function in stack.batch_functions]
    # when it lands under the input prefix
    summary, _ = score_file(stack, s3, "digits/fanout/many.jsonl", body)
    # then every worker took part, every row is in the outputs once, in line order, and no invocation was stopped
    assert len(stack.batch_functions) == WORKERS
    took_part = [f.invocations - before for f, before in zip(stack.batch_functions, invocations_before, strict=True)]
    assert all(count > 0 for count in took_part), took_part
    scored, _ = assert_every_row_once(s3, summary, list(range(1, rows + 1)))
    assert [row["line"] for row in scored] == list(range(1, rows + 1))
    assert summary["shards"] >= 10
    assert max(entry["duration_s"] for entry in summary["invocations"]) < TIMEOUT_S
    assert sum(function.timeouts for function in stack.batch_functions) == 0


def test_a_worker_killed_mid_file_still_leaves_one_complete_output_set(stack: LocalStack, s3: Any) -> None:
    # given a big file whose shards are being scored
    assert stack.info is not None
    bucket, rows = stack.info.resources.bucket, 12_000
    relative = "digits/fanout/crash.jsonl"
    crashes_before = handler_errors(stack)
    s3.put_object(Bucket=bucket, Key=f"{PLATFORM.batch_input_prefix}{relative}", Body=digits_file(rows))
    base = f"{PLATFORM.batch_output_prefix}{relative}.runs/"
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:  # the first shard parts are committed: shards are running
        keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=base).get("Contents", [])]
        if any("/parts/" in key for key in keys):
            break
        time.sleep(0.05)
    # when every worker running an invocation is killed
    crash_busy_workers(stack)
    # then the killed shards' tasks come back after the visibility timeout, and the file completes once
    summary = json.loads(wait_for_object(s3, bucket, f"{PLATFORM.batch_output_prefix}{relative}.summary.json"))
    assert handler_errors(stack) > crashes_before
    scored, failed = assert_every_row_once(s3, summary, list(range(1, rows + 1)))
    assert failed == []
    assert [row["line"] for row in scored] == list(range(1, rows + 1))
    # and the run's working objects, the killed attempt's included, are deleted once the summary is written
    working = f"{base}{summary['run_id']}/"
    deadline = time.monotonic() + WAIT_S
    while s3.list_objects_v2(Bucket=bucket, Prefix=working).get("KeyCount") and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=working).get("Contents", [])]
    assert left == [], left[:12]
