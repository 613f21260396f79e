"""Score one batch file from S3: stream rows, predict in chunks, write results with multipart upload, summary last.

Pure functions over a boto3 S3 client passed in (moto's in tests, the function's own in the handler).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from functions.batch.layout import BatchObject, BatchTarget, input_format
from functions.batch.output import MultipartWriter
from functions.batch.rows import Row, read_csv, read_jsonl
from functions.batch.summary import (
    Summary,
    SummaryInput,
    SummaryOutputs,
    SummaryTimings,
    read_summary,
    utc,
    write_summary,
)
from functions.runtime.errors import InputError, UnknownModelError
from functions.runtime.models import ServedModel

logger = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024


@dataclass
class Counts:
    rows: int = 0
    scored: int = 0
    failed: int = 0
    truncated: int = 0
    inference_s: float = 0.0
    chunks: int = 0


def instance_of(model: ServedModel, row: Row, from_csv: bool) -> tuple[Any, Any]:
    """(row id, checked instance) or an InputError with the reason."""
    assert row.fields is not None
    name = model.input_name
    if name not in row.fields:
        raise InputError(f"missing field {name!r}")
    value = row.fields[name]
    if from_csv and model.manifest.inputs[0].datatype != "BYTES":
        try:
            value = json.loads(value)  # a CSV cell holding a JSON array of numbers
        except json.JSONDecodeError:
            raise InputError(f"field {name!r} must be a JSON array of numbers") from None
    row_id = row.fields.get("id")
    if row_id is not None and not isinstance(row_id, str | int):
        raise InputError("field 'id' must be a string or an integer")
    return (row_id if row_id not in (None, "") else row.line), model.check_instance(value)


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
        if not self.pending:
            return
        chunk, self.pending = self.pending, []
        started = time.perf_counter()
        predictions = self.model.predict_instances([instance for _, _, instance in chunk])
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


def score_batch_file(
    s3: Any,
    obj: BatchObject,
    models: Mapping[str, ServedModel],
    *,
    input_prefix: str,
    output_prefix: str,
    rows_per_inference: int,
    output_bucket: str | None = None,
) -> Summary | None:
    """Score one object; returns its summary, or None when there was nothing to do (duplicate or superseded)."""
    target = BatchTarget.for_key(obj.key, input_prefix, output_prefix)
    model = models.get(target.model)
    if model is None:
        raise UnknownModelError(f"{obj.key}: no model named {target.model!r} (served: {', '.join(sorted(models))})")
    bucket = output_bucket or obj.bucket
    etag = obj.etag.strip('"')

    previous = read_summary(s3, bucket, target.summary_key)
    if previous is not None and previous.input.etag == etag:
        logger.info("already scored %s (etag %s): skipping duplicate notification", obj.key, etag)
        return None

    started = time.time()
    try:
        response = s3.get_object(Bucket=obj.bucket, Key=obj.key, IfMatch=etag)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "NoSuchKey"):
            logger.info(
                "%s changed or vanished since the notification (etag %s): a newer event will score it", obj.key, etag
            )
            return None
        raise
    file_format = input_format(obj.key, response.get("ContentType"))
    lines = response["Body"].iter_lines(chunk_size=READ_CHUNK)
    rows = read_csv(lines) if file_format == "csv" else read_jsonl(lines)

    results = MultipartWriter(s3, bucket, target.output_key)
    errors = MultipartWriter(s3, bucket, target.errors_key)
    try:
        scorer = ChunkScorer(model, rows_per_inference, results, errors)
        for row in rows:
            scorer.counts.rows += 1
            if row.error is not None:
                scorer.fail(row.line, row.error)
                continue
            try:
                row_id, instance = instance_of(model, row, file_format == "csv")
            except InputError as error:
                raw_id = (row.fields or {}).get("id")
                scorer.fail(row.line, str(error), raw_id if isinstance(raw_id, str | int) else None)
                continue
            scorer.add(row.line, row_id, instance)
        scorer.flush()
        results.complete()
        errors.complete()
    except BaseException:
        results.abort()
        errors.abort()
        raise
    response["Body"].close()

    counts = scorer.counts
    finished = time.time()
    summary = Summary(
        model=model.name,
        version=model.version,
        input=SummaryInput(bucket=obj.bucket, key=obj.key, etag=etag, size=obj.size, format=file_format),
        rows=counts.rows,
        scored=counts.scored,
        failed=counts.failed,
        truncated=counts.truncated,
        outputs=SummaryOutputs(bucket=bucket, results=target.output_key, errors=target.errors_key),
        timings=SummaryTimings(
            started_at=utc(started),
            finished_at=utc(finished),
            total_s=round(finished - started, 3),
            inference_s=round(counts.inference_s, 3),
            chunks=counts.chunks,
            rows_per_inference=rows_per_inference,
        ),
    )
    write_summary(s3, bucket, target.summary_key, summary)
    return summary
