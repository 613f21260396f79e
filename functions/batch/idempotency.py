"""One committed run per (input version, model version), built on S3 conditional writes alone (no other store).

- The idempotency key names the input version (bucket, key, versionId, ETag) and the model version, so a re-delivered
  notification is skipped while a new model version scores the file again.
- A claim object, created with If-None-Match and taken over with If-Match once its lease has ended, keeps concurrent
  deliveries from scoring twice. The lease ends at the claimer's Lambda deadline: a killed run holds it no longer than
  Lambda would have let it live, and SQS retries only after the visibility timeout, which is longer.
- Each run writes under its own run id; the summary, committed last with If-Match on the ETag read just before, points
  at that run's files. Readers never see files of two runs, and a run whose input changed meanwhile (an older version
  finishing after a newer one) commits nothing. The claim saves work; correctness rests on the commit alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from typing import Any, Literal

from botocore.exceptions import ClientError

from functions.batch.layout import BatchObject
from functions.batch.summary import LOST_RACE, Summary, error_code, read_summary, utc, write_summary

logger = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 5

Committed = Literal["committed", "duplicate", "superseded"]


class RunInProgressError(Exception):
    """Another live run holds this input version: the message is retried later, when that run has committed."""


def idempotency_key(obj: BatchObject, model: str, model_version: str) -> str:
    """The same for every delivery of one input version to one model version; different otherwise."""
    parts = (obj.bucket, obj.key, obj.version_id or "", obj.etag.strip('"'), model, model_version)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def new_run_id(now: float) -> str:
    """Unique per attempt, and sorts by start time."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + uuid.uuid4().hex[:12]


def claim(s3: Any, bucket: str, key: str, run_id: str, *, until: float, now: float) -> str:
    """Hold the lease at `key` until `until` and return its ETag; RunInProgressError while another run holds it."""
    try:
        return _put_lease(s3, bucket, key, run_id, until, IfNoneMatch="*")
    except ClientError as error:
        if error_code(error) not in LOST_RACE:
            raise
    try:
        held = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error_code(error) in LOST_RACE:
            raise RunInProgressError(f"{key} is changing hands") from None
        raise
    lease = json.loads(held["Body"].read())
    if float(lease.get("expires_at", 0)) > now:
        raise RunInProgressError(f"run {lease.get('run_id')} holds {key} until {lease.get('expires')}")
    try:
        return _put_lease(s3, bucket, key, run_id, until, IfMatch=held["ETag"])
    except ClientError as error:
        if error_code(error) in LOST_RACE:
            raise RunInProgressError(f"another run took over the expired lease {key} first") from None
        raise


def release(s3: Any, bucket: str, key: str, run_id: str, etag: str) -> None:
    """End our lease early (a run that failed and will be retried); best effort, as the lease also ends by itself."""
    try:
        _put_lease(s3, bucket, key, run_id, 0.0, IfMatch=etag)  # a lease someone else took is left alone
    except ClientError:
        logger.warning("could not release %s; it expires by itself", key, exc_info=True)


def _put_lease(s3: Any, bucket: str, key: str, run_id: str, until: float, **condition: str) -> str:
    body = json.dumps({"run_id": run_id, "expires_at": until, "expires": utc(until)}).encode()
    response = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **condition)
    return str(response["ETag"])


def input_is_current(s3: Any, obj: BatchObject) -> bool:
    """Whether the input key still holds the version this run scored (a newer upload supersedes it)."""
    try:
        head = s3.head_object(Bucket=obj.bucket, Key=obj.key)
    except ClientError as error:
        if error_code(error) in ("NoSuchKey", "404"):
            return False
        raise
    if obj.version_id is not None and head.get("VersionId") != obj.version_id:
        return False
    return bool(head["ETag"].strip('"') == obj.etag.strip('"'))


def commit(s3: Any, bucket: str, key: str, summary: Summary, obj: BatchObject) -> Committed:
    """Write the summary last, only over the summary just read and only while the input is still this version."""
    for _ in range(COMMIT_ATTEMPTS):
        current = read_summary(s3, bucket, key)
        if current.summary is not None and current.summary.idempotency_key == summary.idempotency_key:
            return "duplicate"
        if not input_is_current(s3, obj):
            return "superseded"
        if write_summary(s3, bucket, key, summary, current.etag):
            return "committed"
    raise RunInProgressError(f"{key}: lost {COMMIT_ATTEMPTS} commit races in a row")
