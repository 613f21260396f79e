"""Multipart results against moto: several parts complete into one object; an abort leaves nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.batch.output import PART_SIZE, MultipartWriter

BUCKET = "model-serving-batch"


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def test_large_results_are_uploaded_in_parts(s3: Any) -> None:
    line = b'{"id": 1, "prediction": [0.1, 0.2, 0.3]}\n'
    count = PART_SIZE // len(line) + 1000  # just over one part
    writer = MultipartWriter(s3, BUCKET, "batch/output/m/a.out.jsonl")
    for _ in range(count):
        writer.write(line)
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0  # nothing visible before completion
    writer.complete()
    assert len(writer.parts) == 2
    body = s3.get_object(Bucket=BUCKET, Key="batch/output/m/a.out.jsonl")["Body"].read()
    assert body == line * count


def test_empty_results_complete_as_an_empty_object(s3: Any) -> None:
    writer = MultipartWriter(s3, BUCKET, "batch/output/m/a.errors.jsonl")
    writer.complete()
    assert s3.get_object(Bucket=BUCKET, Key="batch/output/m/a.errors.jsonl")["Body"].read() == b""


def test_abort_leaves_no_object_and_no_upload(s3: Any) -> None:
    writer = MultipartWriter(s3, BUCKET, "batch/output/m/a.out.jsonl")
    writer.write(b"partial\n" * 10)
    writer.abort()
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
