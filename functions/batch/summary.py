"""The batch summary: written last, so its presence (with the input's ETag) says a file's outputs are complete."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, ValidationError


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class SummaryInput(_Record):
    bucket: str
    key: str
    etag: str
    size: int | None = None
    format: str


class SummaryOutputs(_Record):
    bucket: str
    results: str
    errors: str


class SummaryTimings(_Record):
    started_at: str
    finished_at: str
    total_s: float
    inference_s: float
    chunks: int
    rows_per_inference: int


class Summary(_Record):
    """`<file>.summary.json`: every input row is counted once, as scored or failed."""

    status: Literal["complete"] = "complete"
    model: str
    version: str
    input: SummaryInput
    rows: int
    scored: int
    failed: int
    truncated: int
    outputs: SummaryOutputs
    timings: SummaryTimings


def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_summary(s3: Any, bucket: str, key: str) -> Summary | None:
    """The summary at `key`, or None when there is none (or it is unreadable, so the file is scored again)."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    try:
        return Summary.model_validate_json(body)
    except ValidationError:
        return None


def write_summary(s3: Any, bucket: str, key: str, summary: Summary) -> None:
    body = summary.model_dump_json(indent=2).encode()
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
