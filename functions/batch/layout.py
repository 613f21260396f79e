"""Where a batch file's results go, and what format it is: the bucket layout contract of the batch path."""

from __future__ import annotations

from dataclasses import dataclass

from functions.runtime.errors import ServingError

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
