"""Score one batch file from S3: stream rows, predict in chunks, write results with multipart upload, summary last.

Pure functions over a boto3 S3 client passed in (moto's in tests, the module-level one in the handler).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from functions.runtime.errors import InputError, ServingError, UnknownModelError
from functions.runtime.models import ServedModel

logger = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024  # S3 parts must be >= 5 MiB except the last
READ_CHUNK = 64 * 1024
JSONL_EXTENSIONS = (".jsonl", ".ndjson", ".json")
CSV_EXTENSIONS = (".csv",)
JSONL_CONTENT_TYPES = ("application/x-ndjson", "application/jsonl", "application/json", "application/x-jsonlines")
CSV_CONTENT_TYPES = ("text/csv", "application/csv")


class BatchInputError(ServingError):
    """A notification that can never be scored (key outside the input prefix, unknown model)."""


@dataclass(frozen=True)
class BatchObject:
    """The object a notification is about; `etag` without quotes, as S3 notifications send it."""

    bucket: str
    key: str
    etag: str
    size: int | None = None


@dataclass(frozen=True)
class BatchTarget:
    """Where a file's results go: <output prefix><model>/<same relative key>.{out.jsonl,errors.jsonl,summary.json}."""

    model: str
    relative_key: str
    output_key: str
    errors_key: str
    summary_key: str

    @classmethod
    def for_key(cls, key: str, input_prefix: str, output_prefix: str) -> BatchTarget:
        if not key.startswith(input_prefix):
            raise BatchInputError(f"{key} is not under the batch input prefix {input_prefix}")
        model, _, relative = key[len(input_prefix) :].partition("/")
        if not model or not relative:
            raise BatchInputError(f"{key}: expected {input_prefix}<model>/<file>")
        base = f"{output_prefix}{model}/{relative}"
        return cls(model, relative, f"{base}.out.jsonl", f"{base}.errors.jsonl", f"{base}.summary.json")


@dataclass(frozen=True)
class Row:
    """One input row: its 1-based line number, and either its fields or why it could not be read."""

    line: int
    fields: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Counts:
    rows: int = 0
    scored: int = 0
    failed: int = 0
    truncated: int = 0
    inference_s: float = 0.0
    chunks: int = 0


class MultipartWriter:
    """Buffered multipart upload: nothing is visible until `complete`; `abort` leaves no object behind."""

    def __init__(self, s3: Any, bucket: str, key: str, content_type: str = "application/x-ndjson") -> None:
        self.s3, self.bucket, self.key = s3, bucket, key
        self.upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)["UploadId"]
        self.parts: list[dict[str, Any]] = []
        self.buffer = bytearray()
        self.bytes_written = 0

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= PART_SIZE:
            self._upload_part()

    def _upload_part(self) -> None:
        number = len(self.parts) + 1
        response = self.s3.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=bytes(self.buffer)
        )
        self.parts.append({"PartNumber": number, "ETag": response["ETag"]})
        self.bytes_written += len(self.buffer)
        self.buffer.clear()

    def complete(self) -> None:
        if self.buffer or not self.parts:
            self._upload_part()  # the last part may be small (or empty, for a file with no rows of this kind)
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )

    def abort(self) -> None:
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except ClientError:
            logger.exception("could not abort multipart upload of %s", self.key)


def input_format(key: str, content_type: str | None) -> str:
    """jsonl or csv, by extension first, then by the object's content type."""
    lowered = key.lower()
    if lowered.endswith(CSV_EXTENSIONS):
        return "csv"
    if lowered.endswith(JSONL_EXTENSIONS):
        return "jsonl"
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type in CSV_CONTENT_TYPES:
        return "csv"
    if media_type in JSONL_CONTENT_TYPES:
        return "jsonl"
    raise BatchInputError(f"{key}: cannot tell the format (use .jsonl or .csv, or a JSON Lines / CSV content type)")


def _decoded(lines: Iterable[bytes]) -> Iterator[tuple[int, str | None]]:
    for number, raw in enumerate(lines, start=1):
        try:
            yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            yield number, None


def read_jsonl(lines: Iterable[bytes]) -> Iterator[Row]:
    """One JSON object per line; blank lines are not rows."""
    for number, text in _decoded(lines):
        if text is None:
            yield Row(number, error="line is not valid UTF-8")
            continue
        if not text.strip():
            continue
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            yield Row(number, error=f"invalid JSON: {error.msg} at column {error.colno}")
            continue
        if not isinstance(document, dict):
            yield Row(number, error=f"expected a JSON object, got {type(document).__name__}")
            continue
        yield Row(number, fields=document)


def read_csv(lines: Iterable[bytes]) -> Iterator[Row]:
    """CSV with a header row; line numbers count the header as line 1, blank lines are not rows."""
    numbered = _decoded(lines)
    header: list[str] | None = None
    for number, text in numbered:
        if text is None:
            if header is None:
                raise BatchInputError("the CSV header is not valid UTF-8")
            yield Row(number, error="line is not valid UTF-8")
            continue
        if not text.strip():
            continue
        try:
            cells = next(csv.reader([text]))
        except csv.Error as error:
            yield Row(number, error=f"invalid CSV: {error}")
            continue
        if header is None:
            header = [cell.strip() for cell in cells]
            continue
        if len(cells) != len(header):
            yield Row(number, error=f"expected {len(header)} columns ({', '.join(header)}), got {len(cells)}")
            continue
        yield Row(number, fields=dict(zip(header, cells, strict=True)))


def instance_of(model: ServedModel, row: Row, from_csv: bool) -> tuple[Any, Any]:
    """(row id, checked instance) or an InputError with the reason."""
    assert row.fields is not None
    name = model.processor.input_name
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
    return (row_id if row_id not in (None, "") else row.line), model.processor.check_instance(value)


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
        try:
            inference = self.model.infer(self.model.processor.stack([instance for _, _, instance in chunk]))
        except InputError as error:  # rows were checked one by one, so this is unexpected; never lose them
            for line, row_id, _ in chunk:
                self.fail(line, str(error), row_id)
            return
        self.counts.inference_s += time.perf_counter() - started
        self.counts.chunks += 1
        truncated = set(inference.truncated)
        for index, ((line, row_id, _), prediction) in enumerate(
            zip(chunk, self.model.processor.predictions(inference.outputs), strict=True)
        ):
            document: dict[str, Any] = {"id": row_id, "line": line, "prediction": prediction}
            if index in truncated:
                document["truncated"] = True
                self.counts.truncated += 1
            self.results.write(_line(document))
        self.counts.scored += len(chunk)


def existing_summary(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    except json.JSONDecodeError:
        return None


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def score_batch_file(
    s3: Any,
    obj: BatchObject,
    models: dict[str, ServedModel],
    *,
    input_prefix: str,
    output_prefix: str,
    rows_per_inference: int,
    output_bucket: str | None = None,
) -> dict[str, Any] | None:
    """Score one object; returns its summary, or None when there was nothing to do (duplicate or superseded)."""
    target = BatchTarget.for_key(obj.key, input_prefix, output_prefix)
    model = models.get(target.model)
    if model is None:
        raise UnknownModelError(f"{obj.key}: no model named {target.model!r} (served: {', '.join(sorted(models))})")
    bucket = output_bucket or obj.bucket
    etag = obj.etag.strip('"')

    previous = existing_summary(s3, bucket, target.summary_key)
    if previous is not None and previous.get("input", {}).get("etag") == etag:
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
    summary = {
        "status": "complete",
        "model": model.name,
        "version": model.version,
        "input": {"bucket": obj.bucket, "key": obj.key, "etag": etag, "size": obj.size, "format": file_format},
        "rows": counts.rows,
        "scored": counts.scored,
        "failed": counts.failed,
        "truncated": counts.truncated,
        "outputs": {"bucket": bucket, "results": target.output_key, "errors": target.errors_key},
        "timings": {
            "started_at": _utc(started),
            "finished_at": _utc(finished),
            "total_s": round(finished - started, 3),
            "inference_s": round(counts.inference_s, 3),
            "chunks": counts.chunks,
            "rows_per_inference": rows_per_inference,
        },
    }
    s3.put_object(
        Bucket=bucket,
        Key=target.summary_key,
        Body=json.dumps(summary, indent=2).encode(),
        ContentType="application/json",
    )
    return summary
