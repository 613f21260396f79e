"""Score one batch file from S3: stream rows, predict in chunks, write one run's files, commit the summary last.

Pure functions over a boto3 S3 client passed in (moto's in tests, the function's own in the handler). A row can only
ever fail itself; a file that can never be scored as it is gets a "failed" summary; S3 and backend errors raise, so
the message is retried.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from functions.batch.idempotency import claim, commit, idempotency_key, new_run_id, release
from functions.batch.layout import BatchInputError, BatchObject, BatchTarget, input_format
from functions.batch.output import MultipartWriter
from functions.batch.rows import Row, read_csv, read_jsonl
from functions.batch.summary import (
    Summary,
    SummaryInput,
    SummaryOutputs,
    SummaryTimings,
    error_code,
    read_summary,
    utc,
)
from functions.runtime.errors import BackendError, InputError
from functions.runtime.models import ServedModel

if TYPE_CHECKING:
    from functions.batch.fanout import FanOut

logger = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
DEFAULT_LEASE_S = 900.0  # Lambda's longest timeout: the lease when no context says when this invocation ends
REASON_CHARS = 300


@dataclass
class Counts:
    rows: int = 0
    scored: int = 0
    failed: int = 0
    truncated: int = 0
    inference_s: float = 0.0
    chunks: int = 0


@dataclass(frozen=True)
class Outcome:
    """What one message came to: scored, failed for good (a "failed" summary), skipped (and why), or for a big file
    planned (shard tasks sent) or still running (a part committed, others to come)."""

    status: Literal["scored", "failed", "duplicate", "superseded", "planned", "running"]
    summary: Summary | None = None


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:REASON_CHARS]


def instance_of(model: ServedModel, row: Row, from_csv: bool) -> tuple[Any, Any]:
    """(row id, checked instance), or an InputError with the reason, whatever exception the row's content causes."""
    assert row.fields is not None
    name = model.input_name
    if name not in row.fields:
        raise InputError(f"missing field {name!r}")
    value = row.fields[name]
    if from_csv and model.manifest.inputs[0].datatype != "BYTES":
        try:
            value = json.loads(value)  # a CSV cell holding a JSON array of numbers
        except (ValueError, RecursionError):
            raise InputError(f"field {name!r} must be a JSON array of numbers") from None
    row_id = row.fields.get("id")
    if row_id is not None and not isinstance(row_id, str | int):
        raise InputError("field 'id' must be a string or an integer")
    try:
        instance = model.check_instance(value)
    except InputError:
        raise
    except Exception as error:  # e.g. OverflowError for a 400-digit pixel value
        raise InputError(f"field {name!r} cannot be used: {describe(error)}") from None
    return (row_id if row_id not in (None, "") else row.line), instance


def _line(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


class ChunkScorer:
    """Collects checked rows and scores them BATCH_ROWS_PER_INFERENCE at a time."""

    def __init__(self, model: ServedModel, size: int, results: MultipartWriter, errors: MultipartWriter) -> None:
        self.model, self.size, self.results, self.errors = model, size, results, errors
        self.pending: list[tuple[int, Any, Any]] = []
        self.counts = Counts()

    def add(self, line: int, row_id: Any, instance: Any) -> None:
        self.pending.append((line, row_id, instance))
        if len(self.pending) >= self.size:
            self.flush()

    def fail(self, line: int, reason: str, row_id: Any = None) -> None:
        document = {"line": line, "reason": reason}
        if row_id is not None:
            document["id"] = row_id
        self.errors.write(_line(document))
        self.counts.failed += 1

    def flush(self) -> None:
        chunk, self.pending = self.pending, []
        if chunk:
            self._score(chunk)

    def _score(self, chunk: list[tuple[int, Any, Any]]) -> None:
        started = time.perf_counter()
        try:
            predictions = self.model.predict_instances([instance for _, _, instance in chunk])
        except BackendError:
            raise  # the backend failed, not the rows: the message is retried
        except Exception as error:  # a row the checks let through (text a tokenizer refuses) fails alone
            if len(chunk) == 1:
                line, row_id, _ = chunk[0]
                self.fail(line, f"could not be scored: {describe(error)}", row_id)
            else:
                for item in chunk:
                    self._score([item])
            return
        self.counts.inference_s += time.perf_counter() - started
        self.counts.chunks += 1
        truncated = set(predictions.truncated)
        for index, ((line, row_id, _), prediction) in enumerate(zip(chunk, predictions.items, strict=True)):
            document: dict[str, Any] = {"id": row_id, "line": line, "prediction": prediction}
            if index in truncated:
                document["truncated"] = True
                self.counts.truncated += 1
            self.results.write(_line(document))
        self.counts.scored += len(chunk)

    def score(self, rows: Iterable[Row], from_csv: bool, stop: Callable[[], bool] | None = None) -> Row | None:
        """Every row read ends in exactly one of the two files; returns the first row left unread when `stop` said so
        (before it was taken), None once the rows ran out."""
        for row in rows:
            if stop is not None and stop():
                self.flush()
                return row
            self.counts.rows += 1
            if row.error is not None:
                self.fail(row.line, row.error)
                continue
            try:
                row_id, instance = instance_of(self.model, row, from_csv)
            except InputError as error:
                raw_id = (row.fields or {}).get("id")
                self.fail(row.line, str(error), raw_id if isinstance(raw_id, str | int) else None)
                continue
            self.add(row.line, row_id, instance)
        self.flush()
        return None


def score_batch_file(
    s3: Any,
    obj: BatchObject,
    models: Mapping[str, ServedModel],
    *,
    input_prefix: str,
    output_prefix: str,
    rows_per_inference: int,
    output_bucket: str | None = None,
    lease_until: float | None = None,
    fan_out: FanOut | None = None,
) -> Outcome:
    """Score one object version once per model version; BatchInputError when its key has no place in the layout.

    A file larger than one of `fan_out`'s shards is planned here and scored by the shard invocations it enqueues.
    """
    target = BatchTarget.for_key(obj.key, input_prefix, output_prefix)
    bucket = output_bucket or obj.bucket
    started = time.time()
    model = models.get(target.model)
    if model is None:
        reason = f"no model named {target.model!r} (served: {', '.join(sorted(models))})"
        return fail_file(s3, obj, target, bucket, idempotency_key(obj, target.model, ""), None, reason, started)
    key = idempotency_key(obj, model.name, model.version)
    previous = read_summary(s3, bucket, target.summary_key).summary
    if previous is not None and previous.idempotency_key == key:
        logger.info("already scored %s (etag %s) with %s %s: skipping", obj.key, obj.etag, model.name, model.version)
        return Outcome("duplicate", previous)
    response = open_version(s3, obj)
    if response is None:
        return Outcome("superseded")
    try:
        try:
            file_format = input_format(obj.key, response.get("ContentType"))
        except BatchInputError as error:
            return fail_file(s3, obj, target, bucket, key, model.version, str(error), started)
        run_id = new_run_id(started)
        claim_key = target.claim_key(key)
        until = started + DEFAULT_LEASE_S if lease_until is None else lease_until
        lease = claim(s3, bucket, claim_key, run_id, until=until, now=time.time())
        try:
            if fan_out is not None and fan_out.applies(obj):
                job = fan_out.job_for(s3, obj, target, bucket, key, model, file_format, started)
                return fan_out.plan(s3, job, response["Body"])
            counts = _write_run(s3, bucket, target, run_id, model, rows_per_inference, response["Body"], file_format)
            summary = Summary(
                model=model.name,
                version=model.version,
                idempotency_key=key,
                run_id=run_id,
                input=summary_input(obj, file_format),
                rows=counts.rows,
                scored=counts.scored,
                failed=counts.failed,
                truncated=counts.truncated,
                outputs=SummaryOutputs(
                    bucket=bucket, results=target.results_key(run_id), errors=target.errors_key(run_id)
                ),
                timings=_timings(counts, started, rows_per_inference),
            )
            committed = commit(s3, bucket, target.summary_key, summary, obj)
        except Exception:
            release(s3, bucket, claim_key, run_id, lease)  # the retry need not wait for this invocation's deadline
            raise
    finally:
        response["Body"].close()
    if committed != "committed":
        logger.warning("run %s of %s is not committed (%s); its files are unreferenced", run_id, obj.key, committed)
    return Outcome("scored" if committed == "committed" else committed, summary)


def _timings(counts: Counts, started: float, rows_per_inference: int) -> SummaryTimings:
    finished = time.time()
    return SummaryTimings(
        started_at=utc(started),
        finished_at=utc(finished),
        total_s=round(finished - started, 3),
        inference_s=round(counts.inference_s, 3),
        chunks=counts.chunks,
        rows_per_inference=rows_per_inference,
    )


def open_version(s3: Any, obj: BatchObject, start: int = 0, end: int | None = None) -> Any:
    """The GetObject response for exactly the notified version (bytes [start, end) when given), or None when the key
    holds another one by now."""
    ranged = {"Range": f"bytes={start}-{end - 1}"} if end is not None else {}
    try:
        response = s3.get_object(Bucket=obj.bucket, Key=obj.key, IfMatch=obj.etag, **ranged)
    except ClientError as error:
        if error_code(error) in ("PreconditionFailed", "412", "NoSuchKey", "404"):
            logger.info("%s changed or vanished since the notification: a newer event will score it", obj.key)
            return None
        raise
    if obj.version_id is not None and response.get("VersionId") not in (None, obj.version_id):
        response["Body"].close()
        logger.info("%s has a newer version than %s: its event will score it", obj.key, obj.version_id)
        return None
    return response


def _write_run(
    s3: Any,
    bucket: str,
    target: BatchTarget,
    run_id: str,
    model: ServedModel,
    rows_per_inference: int,
    body: Any,
    file_format: str,
) -> Counts:
    chunks = body.iter_chunks(READ_CHUNK)
    rows = read_csv(chunks) if file_format == "csv" else read_jsonl(chunks)
    results = MultipartWriter(s3, bucket, target.results_key(run_id))
    errors = MultipartWriter(s3, bucket, target.errors_key(run_id))
    try:
        scorer = ChunkScorer(model, rows_per_inference, results, errors)
        scorer.score(rows, file_format == "csv")
        counts = scorer.counts
        results.complete()
        errors.complete()
    except BaseException:
        results.abort()
        errors.abort()
        raise
    return counts


def summary_input(obj: BatchObject, file_format: str | None) -> SummaryInput:
    return SummaryInput(
        bucket=obj.bucket,
        key=obj.key,
        etag=obj.etag.strip('"'),
        version_id=obj.version_id,
        size=obj.size,
        format=file_format,
    )


def fail_file(
    s3: Any,
    obj: BatchObject,
    target: BatchTarget,
    bucket: str,
    key: str,
    model_version: str | None,
    reason: str,
    started: float,
) -> Outcome:
    """A file that can never be scored as it is: one "failed" summary, committed like any other, and no retry."""
    logger.warning("cannot score %s: %s", obj.key, reason)
    summary = Summary(
        status="failed",
        reason=reason,
        model=target.model,
        version=model_version,
        idempotency_key=key,
        run_id=new_run_id(started),
        input=summary_input(obj, None),
    )
    committed = commit(s3, bucket, target.summary_key, summary, obj)
    return Outcome("failed" if committed == "committed" else committed, summary)
