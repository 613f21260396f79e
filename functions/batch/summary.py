"""The batch summary: committed last with a conditional write, so it always describes one whole run of one input.

`status` is "complete" (every row counted once, as scored or failed, in the files of `outputs`) or "failed" (the file
can never be scored as it is: `reason` says why, and there are no outputs). A file scored in shards adds `shards` and
one `invocations` entry per invocation that planned or scored part of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

# What S3 answers a conditional write that lost: 412 (the ETag moved), 409 (a concurrent conditional write), and
# 404 for If-Match on a key deleted meanwhile.
LOST_RACE = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409", "404")


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class SummaryInput(_Record):
    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    size: int | None = None
    format: str | None = None


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


class Invocation(_Record):
    """One invocation's share of a sharded file: planning (rows 0), scoring the byte range [start, end), or assembling
    the outputs (rows 0; a long assembly parks and is continued, each invocation an entry)."""

    stage: Literal["plan", "score", "assemble"]
    shard: int | None = None
    start: int
    end: int
    rows: int
    duration_s: float


class Summary(_Record):
    """`<file>.summary.json`; `idempotency_key` names the input version and model version the run scored."""

    status: Literal["complete", "failed"] = "complete"
    reason: str | None = None
    model: str
    version: str | None = None  # the model's version; None when no such model is served
    idempotency_key: str
    run_id: str
    input: SummaryInput
    rows: int = 0
    scored: int = 0
    failed: int = 0
    truncated: int = 0
    outputs: SummaryOutputs | None = None
    timings: SummaryTimings | None = None
    shards: int | None = None
    invocations: list[Invocation] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Summary:
        if self.status == "failed" and not self.reason:
            raise ValueError("a failed summary says why")
        if self.status == "complete" and (self.outputs is None or self.timings is None):
            raise ValueError("a complete summary names its outputs and timings")
        if self.rows != self.scored + self.failed:
            raise ValueError("every row is counted once, as scored or failed")
        return self


@dataclass(frozen=True)
class StoredSummary:
    """The summary at a key and the ETag a conditional commit must match (None: no object there)."""

    summary: Summary | None
    etag: str | None


def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def read_summary(s3: Any, bucket: str, key: str) -> StoredSummary:
    """The summary at `key` with its ETag; an unreadable one counts as none, but its ETag is kept to replace it."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error_code(error) in ("NoSuchKey", "404"):
            return StoredSummary(None, None)
        raise
    etag = response["ETag"]
    try:
        return StoredSummary(Summary.model_validate_json(response["Body"].read()), etag)
    except ValidationError:
        return StoredSummary(None, etag)


def write_summary(s3: Any, bucket: str, key: str, summary: Summary, expected_etag: str | None) -> bool:
    """Put the summary only over the object read (If-Match), or only where none is (If-None-Match); False: lost."""
    condition = {"IfMatch": expected_etag} if expected_etag else {"IfNoneMatch": "*"}
    body = summary.model_dump_json(indent=2, exclude_none=True).encode()
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **condition)
    except ClientError as error:
        if error_code(error) in LOST_RACE:
            return False
        raise
    return True
