"""Capture records back from S3, as Firehose leaves them under <prefix><model>/<yyyy-mm-dd>/.

Objects hold newline-delimited records, maybe gzip-compressed, maybe still in CloudWatch Logs' subscription envelope
(a Firehose without message extraction): all three read the same.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from functions.runtime.capture import CAPTURE_KIND

GZIP_MAGIC = b"\x1f\x8b"


def capture_prefixes(prefix: str, model: str, since: datetime, until: datetime) -> list[str]:
    """One prefix per UTC day the window touches."""
    days = (until.date() - since.date()).days
    return [f"{prefix}{model}/{since.date() + timedelta(days=day):%Y-%m-%d}/" for day in range(days + 1)]


def read_capture(
    s3: Any, bucket: str, prefix: str, model: str, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """Every capture record of `model` whose time lies in [since, until] (aware datetimes, UTC)."""
    records: list[dict[str, Any]] = []
    paginator = s3.get_paginator("list_objects_v2")
    for day_prefix in capture_prefixes(prefix, model, since, until):
        for page in paginator.paginate(Bucket=bucket, Prefix=day_prefix):
            for item in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                records.extend(
                    record
                    for record in parse_records(body)
                    if record.get("model") == model and since <= parse_time(record["time"]) <= until
                )
    return records


def parse_records(body: bytes) -> Iterator[dict[str, Any]]:
    if body[:2] == GZIP_MAGIC:
        body = gzip.decompress(body)
    for line in body.decode("utf-8").split("\n"):
        if not line.strip():
            continue
        document = json.loads(line)
        if "logEvents" in document:  # CloudWatch Logs' envelope: the records are its events' messages
            for event in document["logEvents"]:
                yield from parse_records(event["message"].encode())
        elif document.get("kind") == CAPTURE_KIND:
            yield document


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
