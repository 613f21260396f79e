"""Where a batch file's results go, and what format it is: the bucket layout contract of the batch path."""

from __future__ import annotations

from dataclasses import dataclass

from functions.runtime.errors import ServingError

JSONL_EXTENSIONS = (".jsonl", ".ndjson", ".json")
CSV_EXTENSIONS = (".csv",)
JSONL_CONTENT_TYPES = ("application/x-ndjson", "application/jsonl", "application/json", "application/x-jsonlines")
CSV_CONTENT_TYPES = ("text/csv", "application/csv")


class BatchInputError(ServingError):
    """A file that can never be scored as it is (key outside the input prefix, unknown format): retrying cannot help."""


@dataclass(frozen=True)
class BatchObject:
    """The object version a notification is about; `etag` without quotes, as S3 notifications send it."""

    bucket: str
    key: str
    etag: str
    size: int | None = None
    version_id: str | None = None  # present when the bucket is versioned

    @property
    def is_folder_marker(self) -> bool:
        """The empty `name/` object the S3 console creates for a folder: nothing to score."""
        return self.key.endswith("/") and not self.size


@dataclass(frozen=True)
class BatchTarget:
    """Where a file's results go, under <output prefix><model>/<same relative key>:

    `.summary.json` (the one fixed name, committed last) points at the run that produced it, whose rows are in
    `.runs/<run id>.out.jsonl` and `.runs/<run id>.errors.jsonl`; `.runs/<idempotency key>.claim.json` is the lease.
    """

    model: str
    relative_key: str
    base: str

    @classmethod
    def for_key(cls, key: str, input_prefix: str, output_prefix: str) -> BatchTarget:
        if not key.startswith(input_prefix):
            raise BatchInputError(f"{key} is not under the batch input prefix {input_prefix}")
        model, _, relative = key[len(input_prefix) :].partition("/")
        if not model or not relative or relative.endswith("/"):
            raise BatchInputError(f"{key}: expected {input_prefix}<model>/<file>")
        return cls(model, relative, f"{output_prefix}{model}/{relative}")

    @property
    def summary_key(self) -> str:
        return f"{self.base}.summary.json"

    def results_key(self, run_id: str) -> str:
        return f"{self.base}.runs/{run_id}.out.jsonl"

    def errors_key(self, run_id: str) -> str:
        return f"{self.base}.runs/{run_id}.errors.jsonl"

    def claim_key(self, idempotency_key: str) -> str:
        return f"{self.base}.runs/{idempotency_key}.claim.json"

    def job_key(self, idempotency_key: str) -> str:
        """A sharded run's record: which run id, header and model version every invocation of it works with."""
        return f"{self.base}.runs/{idempotency_key}.job.json"

    def run_prefix(self, run_id: str) -> str:
        """A sharded run's working objects (parts, markers, claims), deleted once its outputs are assembled."""
        return f"{self.base}.runs/{run_id}/"

    @property
    def status_key(self) -> str:
        """A sharded run's progress while it runs (and its last word once done)."""
        return f"{self.base}.status.json"


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
