"""A batch file bigger than one shard, scored by many invocations of the batch function, with S3 and SQS alone.

- **Plan:** the invocation the notification reaches reads the file once, cuts it at row starts (`shards.py`) and sends
  one `ShardTask` per shard to the function's own queue as it goes; near its hand-off time it sends the rest of the
  plan as a task too. The event source mapping's maximum concurrency bounds how many shards run at once.
- **Score:** a shard invocation reads only its byte range (a ranged GET of the notified version), writes its rows to
  files of its own attempt, then commits a part marker keyed by the range's start with If-None-Match: a retried or
  duplicated task finds the marker and follows it, so no row is ever written twice. Near its hand-off time it stops
  before a row, commits what it has, and sends the rest of its range as a continuation.
- **Assemble:** whoever sees the parts cover the planned file (markers are listed, so the last one to finish sees it,
  whatever the order) takes the assembly lease; the parts become the usual outputs in line order (UploadPartCopy for
  parts of 5 MiB or more), the summary is committed last, and the run's working objects are deleted. An assembly
  still going at the hand-off time parks: the open multipart upload, its parts and the bytes it had buffered are
  saved, an `assemble` task is sent, and the lease released; the next invocation resumes from there.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from functions.batch.idempotency import RunInProgressError, claim, commit, new_run_id, release
from functions.batch.layout import BatchObject, BatchTarget
from functions.batch.notifications import ShardTask
from functions.batch.output import MultipartWriter
from functions.batch.rows import CsvHeader, CsvRows
from functions.batch.scoring import ChunkScorer, Outcome, fail_file, open_version, summary_input
from functions.batch.shards import Boundary, csv_starts, jsonl_starts, read_range
from functions.batch.summary import (
    LOST_RACE,
    Invocation,
    Summary,
    SummaryInput,
    SummaryOutputs,
    SummaryTimings,
    error_code,
    read_summary,
    utc,
)
from functions.runtime.models import ServedModel

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

HANDOFF_AT = 0.4  # an invocation takes no new row once this share of its timeout has passed: it ends well under half
READ_CHUNK = 1024 * 1024
PARALLEL_READS = 16


class Job(BaseModel):
    """`<file>.runs/<idempotency key>.job.json`: what every invocation of one sharded run works with."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    idempotency_key: str
    model: str
    version: str
    relative_key: str
    base: str
    bucket: str  # where outputs go
    input: SummaryInput
    rows_per_inference: int
    started: float
    first: int = 0  # the first row's offset (CSV: after the header)
    header: tuple[str, ...] | None = None
    header_problem: str = ""

    @property
    def target(self) -> BatchTarget:
        return BatchTarget(self.model, self.relative_key, self.base)

    @property
    def obj(self) -> BatchObject:
        source = self.input
        return BatchObject(source.bucket, source.key, source.etag, source.size, source.version_id)

    @property
    def size(self) -> int:
        return self.input.size or 0

    @property
    def csv_header(self) -> CsvHeader | None:
        return CsvHeader(self.header, self.header_problem) if self.input.format == "csv" else None

    def key(self, name: str) -> str:
        return self.target.run_prefix(self.run_id) + name


class Part(BaseModel):
    """`parts/<start>.json`, the commit point of one invocation's rows: the range it scored and its files."""

    model_config = ConfigDict(frozen=True)

    shard: int
    start: int
    end: int
    next_line: int  # the line at `end` (where a continuation starts)
    rows: int
    scored: int
    failed: int
    truncated: int
    inference_s: float
    chunks: int
    duration_s: float
    results: str
    results_bytes: int
    errors: str
    errors_bytes: int


class Parked(BaseModel):
    """One output's multipart upload, handed on at the hand-off time: sources before `next` are in it or in `carry`
    (the buffered bytes, under one part, saved as an object)."""

    upload_id: str
    parts: list[dict[str, Any]]
    next: int
    carry: str
    carry_bytes: int


class Assembly(BaseModel):
    """`assembly.json`: what a parked assembly has done (outputs complete) and where the others stand."""

    complete: list[str] = []
    parked: dict[str, Parked] = {}
    invocations: list[Invocation] = []


@dataclass(frozen=True)
class Clock:
    """When this invocation hands off (monotonic) and when its lease ends (epoch); None: no Lambda context."""

    handoff_at: float | None
    lease_until: float | None

    @classmethod
    def for_invocation(cls, remaining_ms: int | None, timeout_s: float) -> Clock:
        if remaining_ms is None:
            return cls(None, None)
        remaining_s = remaining_ms / 1e3
        return cls(time.monotonic() + remaining_s - (1 - HANDOFF_AT) * timeout_s, time.time() + remaining_s)

    def due(self) -> bool:
        return self.handoff_at is not None and time.monotonic() >= self.handoff_at


@dataclass(frozen=True)
class FanOut:
    """One invocation's way of fanning a big file out: its queue, the shard size and its clock."""

    sqs: Any
    queue_url: str
    shard_bytes: int
    rows_per_inference: int
    clock: Clock

    def applies(self, obj: BatchObject) -> bool:
        return (obj.size or 0) > self.shard_bytes

    # --- plan ---------------------------------------------------------------------------------------------------

    def job_for(
        self,
        s3: Any,
        obj: BatchObject,
        target: BatchTarget,
        bucket: str,
        idempotency_key: str,
        model: ServedModel,
        file_format: str,
        started: float,
    ) -> Job:
        """The run already recorded for this input and model version (a redelivery re-plans it), else a new one."""
        recorded = _read_model(s3, bucket, target.job_key(idempotency_key), Job)
        if recorded is not None:
            return recorded
        return Job(
            run_id=new_run_id(started),
            idempotency_key=idempotency_key,
            model=model.name,
            version=model.version,
            relative_key=target.relative_key,
            base=target.base,
            bucket=bucket,
            input=summary_input(obj, file_format),
            rows_per_inference=self.rows_per_inference,
            started=started,
        )

    def plan(self, s3: Any, job: Job, body: Any, task: ShardTask | None = None) -> Outcome:
        """Send a task per shard from the file's start (or `task`'s), and hand the rest on when time runs short."""
        started = time.monotonic()
        if _exists(s3, job.bucket, job.key("planned.json")):
            logger.info("%s is planned already", job.input.key)
            outcome = self.progress(s3, job)  # a redelivered planner whose run may be ready to assemble
            return outcome if outcome.status != "running" else Outcome("planned")
        resume = Boundary(task.start, task.line) if task is not None else None
        chunks = body.iter_chunks(READ_CHUNK)
        csv_rows = None
        if job.input.format == "csv":
            offset, line = (resume.offset, resume.line) if resume else (0, 1)
            csv_rows = CsvRows(chunks, first_line=line, offset=offset, header=job.csv_header if resume else None)
            starts: Iterator[Boundary] = csv_starts(csv_rows, self.shard_bytes)
        else:
            starts = jsonl_starts(chunks, self.shard_bytes, job.size, resume or Boundary(0, 1))
        shard, pending, recorded = task.shard if task else 0, None, task is not None
        for boundary in starts:
            if not recorded:
                job = self._record(s3, job, boundary.offset, csv_rows)
                recorded = True
            if pending is not None:
                self.send_task("score", job, shard, pending, boundary.offset)
                shard += 1
            pending = boundary
            if self.clock.due() and shard > (task.shard if task else 0):
                self.send_task("plan", job, shard, pending, job.size)
                self._record_planning(s3, job, resume or Boundary(0, 1), pending.offset, started)
                return Outcome("planned")
        if not recorded:  # no row at all (a CSV header and blank lines): nothing to score, but the outputs still come
            job = self._record(s3, job, job.size, csv_rows)
        if pending is not None:
            self.send_task("score", job, shard, pending, job.size)
            shard += 1
        _put_json(s3, job.bucket, job.key("planned.json"), {"shards": shard, "first": job.first, "end": job.size})
        self._record_planning(s3, job, resume or Boundary(0, 1), job.size, started)
        logger.info("planned %s in %d shards", job.input.key, shard)
        outcome = self.progress(s3, job)  # every shard may have finished already
        return outcome if outcome.status != "running" else Outcome("planned")

    def _record(self, s3: Any, job: Job, first: int, csv_rows: CsvRows | None) -> Job:
        """Write the job record once its first row (and so its CSV header) is known; a concurrent planner's wins."""
        header = csv_rows.header if csv_rows is not None else None
        update: dict[str, Any] = {"first": first}
        if header is not None:
            update |= {"header": header.names, "header_problem": header.problem}
        job = job.model_copy(update=update)
        if not _put_json(s3, job.bucket, _job_key(job), job.model_dump(mode="json"), if_none_match=True):
            recorded = _read_model(s3, job.bucket, _job_key(job), Job)
            assert recorded is not None
            return recorded
        return job

    def _record_planning(self, s3: Any, job: Job, start: Boundary, end: int, started: float) -> None:
        invocation = Invocation(stage="plan", start=start.offset, end=end, rows=0, duration_s=_since(started))
        _put_json(s3, job.bucket, job.key(f"invocations/plan-{start.offset:015d}.json"), invocation.model_dump())

    def send_task(self, kind: Literal["score", "plan"], job: Job, shard: int, start: Boundary, end: int) -> None:
        task = ShardTask(
            task=kind, bucket=job.bucket, job=_job_key(job), shard=shard, start=start.offset, end=end, line=start.line
        )
        self.send(task)

    def send(self, task: ShardTask) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=task.model_dump_json())

    # --- score --------------------------------------------------------------------------------------------------

    def run_task(self, s3: Any, task: ShardTask, models: Mapping[str, ServedModel]) -> Outcome:
        """One task from the queue: plan on, or score a range (once, whatever the deliveries) and maybe assemble."""
        job = _read_model(s3, task.bucket, task.job, Job)
        committed = read_summary(s3, task.bucket, job.target.summary_key).summary if job is not None else None
        if job is None or (committed is not None and committed.idempotency_key == job.idempotency_key):
            logger.info("%s: its run is over", task.job)
            return Outcome("duplicate", committed)
        model = models.get(job.model)
        if model is None or model.version != job.version:
            now = model.version if model is not None else "no such model"
            reason = (
                f"{job.model} changed from version {job.version} to {now} while the file was scored; upload it again"
            )
            return fail_file(s3, job.obj, job.target, job.bucket, job.idempotency_key, job.version, reason, time.time())
        if task.task == "assemble":
            return self.assemble(s3, job, task.shard, continuation=True)
        if task.task == "plan":
            response = open_version(s3, job.obj, task.start, job.size)
            if response is None:
                return Outcome("superseded")
            with closing(response["Body"]) as body:
                return self.plan(s3, job, body, task)
        part = _read_model(s3, job.bucket, job.key(f"parts/{task.start:015d}.json"), Part)
        if part is None:
            scored = self._score(s3, job, task, model)
            if scored is None:
                return Outcome("superseded")
            part = scored
        if part.end < task.end:
            self.send(task.model_copy(update={"start": part.end, "line": part.next_line}))
        _put_json(s3, job.bucket, job.key(f"done/{_done_name(part, task.end)}"), {})
        return self.progress(s3, job)

    def _score(self, s3: Any, job: Job, task: ShardTask, model: ServedModel) -> Part | None:
        started = time.monotonic()
        response = open_version(s3, job.obj, task.start, task.end)
        if response is None:
            return None
        attempt = f"files/{task.start:015d}-{uuid.uuid4().hex[:12]}"
        results = MultipartWriter(s3, job.bucket, job.key(f"{attempt}.out.jsonl"))
        errors = MultipartWriter(s3, job.bucket, job.key(f"{attempt}.errors.jsonl"))
        try:
            with closing(response["Body"]) as body:
                rows = read_range(
                    body.iter_chunks(READ_CHUNK),
                    job.input.format or "jsonl",
                    Boundary(task.start, task.line),
                    job.csv_header,
                )
                scorer = ChunkScorer(model, job.rows_per_inference, results, errors)
                left = scorer.score(
                    rows, job.input.format == "csv", lambda: scorer.counts.rows > 0 and self.clock.due()
                )
            sizes = results.bytes_written + len(results.buffer), errors.bytes_written + len(errors.buffer)
            results.complete()
            errors.complete()
        except BaseException:
            results.abort()
            errors.abort()
            raise
        counts = scorer.counts
        part = Part(
            shard=task.shard,
            start=task.start,
            end=left.offset if left is not None else task.end,
            next_line=left.line if left is not None else task.line,
            rows=counts.rows,
            scored=counts.scored,
            failed=counts.failed,
            truncated=counts.truncated,
            inference_s=round(counts.inference_s, 3),
            chunks=counts.chunks,
            duration_s=_since(started),
            results=results.key,
            results_bytes=sizes[0],
            errors=errors.key,
            errors_bytes=sizes[1],
        )
        marker = job.key(f"parts/{task.start:015d}.json")
        if _put_json(s3, job.bucket, marker, part.model_dump(), if_none_match=True):
            return part
        logger.info("another attempt committed %s first: following it", marker)  # its rows count, not ours
        for key in (results.key, errors.key):
            s3.delete_object(Bucket=job.bucket, Key=key)
        committed = _read_model(s3, job.bucket, marker, Part)
        assert committed is not None
        return committed

    # --- progress and assembly ----------------------------------------------------------------------------------

    def progress(self, s3: Any, job: Job) -> Outcome:
        """Write the status object from the finished parts; assemble when they cover the planned file."""
        planned = _read_json(s3, job.bucket, job.key("planned.json"))
        parts = [_parse_done(key) for key in _list(s3, job.bucket, job.key("done/"))]
        status = {
            "status": "running",
            "run_id": job.run_id,
            "shards": planned["shards"] if planned else None,
            "shards_done": sum(1 for part in parts if part["last"]),
            "rows": sum(part["rows"] for part in parts),
            "scored": sum(part["scored"] for part in parts),
            "failed": sum(part["failed"] for part in parts),
            "updated_at": utc(time.time()),
        }
        _write_status(s3, job, status)
        if planned is None or not _covered(parts, planned["first"], planned["end"]):
            return Outcome("running")
        return self.assemble(s3, job, planned["shards"])

    def assemble(self, s3: Any, job: Job, shards: int, *, continuation: bool = False) -> Outcome:
        """The outputs from the parts, in line order, then the summary; one assembler at a time (a lease).

        A `continuation` (the task a parked assembly sent) that finds the lease still held is retried by SQS: the
        parking invocation releases it right after sending.
        """
        started = time.monotonic()
        lease_key, holder = job.key("assembly.claim.json"), uuid.uuid4().hex
        try:
            lease = claim(s3, job.bucket, lease_key, holder, until=self._lease_until(), now=time.time())
        except RunInProgressError:
            if continuation:
                raise
            logger.info("another invocation assembles %s", job.input.key)
            return Outcome("running")
        target = job.target
        starts = sorted(int(key.rsplit("/", 1)[1].split("-", 1)[0]) for key in _list(s3, job.bucket, job.key("done/")))
        with ThreadPoolExecutor(PARALLEL_READS) as pool:
            parts = list(
                pool.map(lambda start: _read_model(s3, job.bucket, job.key(f"parts/{start:015d}.json"), Part), starts)
            )
        chain = _chain([part for part in parts if part is not None], job.first)
        if (chain[-1].end if chain else job.first) < job.size:  # never a summary that misses rows: retry instead
            raise RunInProgressError(f"{job.input.key}: the committed parts do not reach the end of the file yet")
        state = _read_model(s3, job.bucket, job.key("assembly.json"), Assembly) or Assembly()
        outputs = {
            "results": (target.results_key(job.run_id), [(p.results, p.results_bytes) for p in chain]),
            "errors": (target.errors_key(job.run_id), [(p.errors, p.errors_bytes) for p in chain]),
        }
        for name, (key, sources) in outputs.items():
            if name in state.complete:
                continue
            try:
                parked = _concatenate(s3, job, key, sources, state.parked.get(name), self.clock)
            except BaseException:
                state.parked.pop(name, None)  # its upload was aborted: the retry starts this output afresh
                _put_json(s3, job.bucket, job.key("assembly.json"), state.model_dump())
                raise
            if parked is not None:
                state.parked[name] = parked
                state.invocations.append(_assembly_invocation(job, started))
                _put_json(s3, job.bucket, job.key("assembly.json"), state.model_dump())
                self.send(
                    ShardTask(
                        task="assemble",
                        bucket=job.bucket,
                        job=_job_key(job),
                        shard=shards,
                        start=0,
                        end=job.size,
                        line=1,
                    )
                )
                release(s3, job.bucket, lease_key, holder, lease)
                logger.info("parked the assembly of %s at part %d of %s", job.input.key, parked.next, name)
                return Outcome("running")
            state.complete.append(name)
            state.parked.pop(name, None)
            _put_json(s3, job.bucket, job.key("assembly.json"), state.model_dump())
        planning = [
            Invocation.model_validate(_read_json(s3, job.bucket, key))
            for key in _list(s3, job.bucket, job.key("invocations/"))
        ]
        finished = time.time()
        summary = Summary(
            model=job.model,
            version=job.version,
            idempotency_key=job.idempotency_key,
            run_id=job.run_id,
            input=job.input,
            rows=sum(p.rows for p in chain),
            scored=sum(p.scored for p in chain),
            failed=sum(p.failed for p in chain),
            truncated=sum(p.truncated for p in chain),
            outputs=SummaryOutputs(
                bucket=job.bucket, results=target.results_key(job.run_id), errors=target.errors_key(job.run_id)
            ),
            timings=SummaryTimings(
                started_at=utc(job.started),
                finished_at=utc(finished),
                total_s=round(finished - job.started, 3),
                inference_s=round(sum(p.inference_s for p in chain), 3),
                chunks=sum(p.chunks for p in chain),
                rows_per_inference=job.rows_per_inference,
            ),
            shards=shards,
            invocations=planning
            + [
                Invocation(stage="score", shard=p.shard, start=p.start, end=p.end, rows=p.rows, duration_s=p.duration_s)
                for p in chain
            ]
            + state.invocations
            + [_assembly_invocation(job, started)],
        )
        committed = commit(s3, job.bucket, target.summary_key, summary, job.obj)
        if committed == "committed":
            _write_status(
                s3,
                job,
                {
                    "status": "complete",
                    "run_id": job.run_id,
                    "shards": shards,
                    "shards_done": shards,
                    "rows": summary.rows,
                    "scored": summary.scored,
                    "failed": summary.failed,
                    "updated_at": utc(finished),
                },
            )
        _delete(s3, job.bucket, _list(s3, job.bucket, target.run_prefix(job.run_id)))
        logger.info("assembled %s from %d parts (%s)", job.input.key, len(chain), committed)
        return Outcome("scored" if committed == "committed" else committed, summary)

    def _lease_until(self) -> float:
        return self.clock.lease_until if self.clock.lease_until is not None else time.time() + 900.0


def _job_key(job: Job) -> str:
    return job.target.job_key(job.idempotency_key)


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def _done_name(part: Part, shard_end: int) -> str:
    """The done marker's name carries its counts, so progress needs one listing, not a read per part."""
    last = int(part.end >= shard_end)
    return f"{part.start:015d}-{part.end:015d}-{last}-{part.rows}-{part.scored}-{part.failed}"


def _parse_done(key: str) -> dict[str, int]:
    start, end, last, rows, scored, failed = (int(value) for value in key.rsplit("/", 1)[1].split("-"))
    return {"start": start, "end": end, "last": last, "rows": rows, "scored": scored, "failed": failed}


def _covered(parts: Iterable[dict[str, int]], first: int, end: int) -> bool:
    """Whether parts chained from `first` reach the file's end (every row read once)."""
    by_start = {part["start"]: part["end"] for part in parts}
    position = first
    while position < end and position in by_start:
        position = by_start[position]
    return position >= end


def _chain(parts: list[Part], first: int) -> list[Part]:
    by_start = {part.start: part for part in parts}
    chain, position = [], first
    while position in by_start:
        chain.append(by_start[position])
        position = by_start[position].end
    return chain


def _assembly_invocation(job: Job, started: float) -> Invocation:
    return Invocation(stage="assemble", start=job.first, end=job.size, rows=0, duration_s=_since(started))


def _concatenate(
    s3: Any, job: Job, key: str, sources: list[tuple[str, int]], parked: Parked | None, clock: Clock
) -> Parked | None:
    """One object from the parts' files, in order, or where it stands when `clock` says hand off (at least one
    source further than it started, so every invocation makes progress). An identical object already there (a
    retried assembly) stays."""
    resume = (parked.upload_id, parked.parts) if parked is not None else None
    writer = MultipartWriter(s3, job.bucket, key, resume=resume)
    first = parked.next if parked is not None else 0
    try:
        if parked is not None and parked.carry_bytes:
            writer.append_object(parked.carry, parked.carry_bytes)
        for index in range(first, len(sources)):
            if index > first and clock.due():
                carry = job.key(f"assembly/{key.rsplit('/', 1)[-1]}-{index:09d}.carry")
                carry_bytes = writer.park(carry)
                return Parked(
                    upload_id=writer.upload_id, parts=writer.parts, next=index, carry=carry, carry_bytes=carry_bytes
                )
            source, size = sources[index]
            if size:
                writer.append_object(source, size)
        writer.complete()
    except ClientError as error:
        writer.abort()
        if error_code(error) not in LOST_RACE:
            raise
        logger.info("%s exists from an earlier assembly of the same parts", key)
    except BaseException:
        writer.abort()
        raise
    return None


def _write_status(s3: Any, job: Job, status: dict[str, Any]) -> None:
    """Replace the status object unless it already says this run is over (a late progress report never undoes it)."""
    key = job.target.status_key
    try:
        current = s3.get_object(Bucket=job.bucket, Key=key)
        etag, previous = current["ETag"], json.loads(current["Body"].read())
    except ClientError as error:
        if error_code(error) not in ("NoSuchKey", "404"):
            raise
        etag, previous = None, {}
    if previous.get("run_id") == job.run_id and previous.get("status") != "running":
        return
    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        s3.put_object(
            Bucket=job.bucket, Key=key, Body=json.dumps(status).encode(), ContentType="application/json", **condition
        )
    except ClientError as error:
        if error_code(error) not in LOST_RACE:
            raise  # a lost race: someone wrote a newer status meanwhile


def _list(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def _delete(s3: Any, bucket: str, keys: list[str]) -> None:
    """Many at once: a run of a thousand shards leaves thousands of working objects, and deleting them one after
    another would outlast a short timeout. (DeleteObjects would be one request per 1,000, but moto authorises it
    against the bucket rather than each key, so the prefix-scoped grant the stack synthesizes is refused locally.)"""
    with ThreadPoolExecutor(PARALLEL_READS) as pool:
        list(pool.map(lambda key: s3.delete_object(Bucket=bucket, Key=key), keys))


def _exists(s3: Any, bucket: str, key: str) -> bool:
    return _read_json(s3, bucket, key) is not None


def _read_json(s3: Any, bucket: str, key: str) -> Any:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as error:
        if error_code(error) in ("NoSuchKey", "404"):
            return None
        raise


def _read_model(s3: Any, bucket: str, key: str, model: type[M]) -> M | None:
    document = _read_json(s3, bucket, key)
    return model.model_validate(document) if document is not None else None


def _put_json(s3: Any, bucket: str, key: str, document: Any, *, if_none_match: bool = False) -> bool:
    """Put a JSON object; with `if_none_match`, only where none is (False: another write got there first)."""
    condition = {"IfNoneMatch": "*"} if if_none_match else {}
    try:
        s3.put_object(
            Bucket=bucket, Key=key, Body=json.dumps(document).encode(), ContentType="application/json", **condition
        )
    except ClientError as error:
        if if_none_match and error_code(error) in LOST_RACE:
            return False
        raise
    return True
