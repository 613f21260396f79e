"""Talking to a running local stack as a client would: real HTTP to the front, boto3 (as the admin) to moto."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from catalog import load_catalog
from local.stack import LocalStack

PLATFORM = load_catalog().platform
WAIT_S = 90.0  # every wait on the stack is bounded by this


def http(
    stack: LocalStack,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> tuple[int, dict[str, str], Any]:
    """One real HTTP request to the front; returns status, headers and the JSON body."""
    assert stack.info is not None
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"content-type": content_type} if data is not None else {}
    request = urllib.request.Request(stack.info.api_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, json.loads(error.read())


def wait_for_object(s3: Any, bucket: str, key: str, timeout_s: float = WAIT_S) -> bytes:
    """Poll for an object with a deadline; the batch function writes the summary last."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            time.sleep(0.2)
    raise TimeoutError(f"s3://{bucket}/{key} did not appear within {timeout_s:.0f} s")


def jsonl_rows(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def score_file(stack: LocalStack, s3: Any, relative_key: str, body: bytes) -> tuple[dict[str, Any], float]:
    """Put a file under the batch input prefix and wait for its summary; returns it and the turnaround in seconds."""
    assert stack.info is not None
    bucket = stack.info.resources.bucket
    started = time.monotonic()
    s3.put_object(Bucket=bucket, Key=f"{PLATFORM.batch_input_prefix}{relative_key}", Body=body)
    summary_key = f"{PLATFORM.batch_output_prefix}{relative_key}.summary.json"
    summary = json.loads(wait_for_object(s3, bucket, summary_key))
    return summary, time.monotonic() - started


def assert_every_row_once(s3: Any, summary: dict[str, Any], lines: list[int]) -> tuple[list[dict], list[dict]]:
    """Each input row is in exactly one of the output and errors files, and the summary counts both."""
    bucket = summary["outputs"]["bucket"]
    scored = jsonl_rows(s3, bucket, summary["outputs"]["results"])
    failed = jsonl_rows(s3, bucket, summary["outputs"]["errors"])
    seen = [row["line"] for row in scored] + [row["line"] for row in failed]
    assert sorted(seen) == sorted(lines)
    assert summary["rows"] == len(lines) == summary["scored"] + summary["failed"]
    assert (summary["scored"], summary["failed"]) == (len(scored), len(failed))
    return scored, failed
