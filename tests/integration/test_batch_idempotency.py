"""Idempotency under concurrency, against moto: one committed run per input version and model version.

Each thread runs its own batch function (its own processor, logger and metrics, as separate Lambda sandboxes would),
over one moto S3 whose object requests are made atomic: S3 evaluates a conditional write atomically, while moto checks
the condition and then writes, so two threads could both pass a check that S3 would let only one pass.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from moto.s3.responses import S3Response

from functions.batch.app import BatchFunction, create_batch_handler
from functions.batch.layout import BatchObject
from functions.batch.output import MultipartWriter
from functions.batch.scoring import Outcome, score_batch_file
from functions.runtime.models import ServedModel
from functions.runtime.settings import Settings
from local.lambda_context import LambdaContext
from tests.integration.test_batch_handler import BUCKET, all_keys, moto_bucket, outputs, put, read_summary, sqs_event

KEY = "batch/input/sentiment/shared.jsonl"
SUMMARY = "batch/output/sentiment/shared.jsonl.summary.json"
RUNS = "batch/output/sentiment/shared.jsonl.runs/"
WAIT_S = 30.0


@pytest.fixture
def s3(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's S3 (versioned when the test asks), one object request at a time, as S3's conditional writes are atomic."""
    lock, handle = threading.Lock(), S3Response._key_response

    def atomic(self: S3Response, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return handle(self, *args, **kwargs)

    monkeypatch.setattr(S3Response, "_key_response", atomic)
    with moto_bucket(versioned=getattr(request, "param", False)) as client:
        yield client


@pytest.fixture
def sandbox(serving_settings: Settings, loaded_models: Mapping[str, ServedModel], s3: Any) -> Callable[[str], Any]:
    """A fresh batch function (a Lambda sandbox of its own) under a name of its own."""

    def build(name: str) -> BatchFunction:
        return create_batch_handler(serving_settings.model_copy(update={"service_name": name}), loaded_models, s3)

    return build


@pytest.fixture
def event(load_event: Callable[[str], dict], s3: Any) -> Callable[[], dict]:
    """The SQS event for KEY's current object version."""
    return lambda: sqs_event(load_event("sqs_s3_put")["Records"][0], s3, KEY)


@pytest.fixture
def predictions(loaded_models: Mapping[str, ServedModel], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The chunk sizes the sentiment model is asked to score, each call taking a little while."""
    model, calls = loaded_models["sentiment"], []
    original = model.predict_instances

    def slow(instances: list[Any]) -> Any:
        calls.append(len(instances))
        time.sleep(0.05)
        return original(instances)

    monkeypatch.setattr(model, "predict_instances", slow)
    return calls


@dataclass
class Held:
    """The run on the thread named HELD stops inside its first inference until `go_on` is set."""

    inside: threading.Event = field(default_factory=threading.Event)
    go_on: threading.Event = field(default_factory=threading.Event)


HELD = "held-run"


@pytest.fixture
def held(loaded_models: Mapping[str, ServedModel], monkeypatch: pytest.MonkeyPatch) -> Held:
    model, holding = loaded_models["sentiment"], Held()
    original = model.predict_instances

    def hold(instances: list[Any]) -> Any:
        if threading.current_thread().name == HELD:
            holding.inside.set()
            holding.go_on.wait(WAIT_S)
        return original(instances)

    monkeypatch.setattr(model, "predict_instances", hold)
    return holding


def context(timeout_s: float = 25.0) -> LambdaContext:
    return LambdaContext(function_name="model-serving-test", memory_limit_in_mb=2048, timeout_s=timeout_s)


def invoke(function: BatchFunction, event: dict, timeout_s: float = 25.0) -> dict | Exception:
    """The handler's response, or the error Lambda would report (every record failed: all are retried)."""
    try:
        return dict(function.lambda_handler(event, context(timeout_s)))
    except BatchProcessingError as error:
        return error


def run_files(s3: Any) -> list[str]:
    return sorted(key.rsplit(".runs/", 1)[1] for key in all_keys(s3) if key.startswith(RUNS))


def test_concurrent_deliveries_of_one_notification_produce_one_output_set(
    s3: Any, sandbox: Callable[[str], BatchFunction], event: Callable[[], dict], predictions: list[int]
) -> None:
    # given one file, and four sandboxes receiving the same notification at the same moment
    put(s3, KEY, [json.dumps({"id": i, "text": f"row {i}"}) for i in range(10)])
    functions, message = [sandbox(f"batch-{n}") for n in range(4)], event()
    start = threading.Barrier(len(functions))
    responses: list[dict | Exception | None] = [None] * len(functions)

    def deliver(n: int) -> None:
        start.wait()
        responses[n] = invoke(functions[n], message)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(len(functions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    # then the file was scored once (10 rows in chunks of 4), the others being left for a retry (or, when they came
    # after the commit, skipped)
    assert predictions == [4, 4, 2]
    assert sum(response == {"batchItemFailures": []} for response in responses) >= 1
    assert all(isinstance(response, dict | BatchProcessingError) for response in responses)
    # and exactly one output set exists: the summary's, whose files hold every row once
    summary, results, errors = outputs(s3, SUMMARY)
    run = summary["run_id"]
    assert run_files(s3) == sorted(
        [f"{summary['idempotency_key']}.claim.json", f"{run}.out.jsonl", f"{run}.errors.jsonl"]
    )
    assert (len(results), len(errors), summary["rows"]) == (10, 0, 10)
    # and the retries of those left over are skipped as duplicates
    assert [invoke(function, message) for function in functions] == [{"batchItemFailures": []}] * 4
    assert predictions == [4, 4, 2]


def test_runs_never_mix_even_when_a_lease_runs_out(
    s3: Any, loaded_models: Mapping[str, ServedModel], held: Held
) -> None:
    """The lease only saves work. Run A outlives its lease; run B takes the lease over, scores and commits; A's commit
    then finds its input version committed and writes no summary, so the summary names B's files only."""
    put(s3, KEY, [json.dumps({"text": f"row {i}"}) for i in range(6)])
    head = s3.head_object(Bucket=BUCKET, Key=KEY)
    obj = BatchObject(BUCKET, KEY, head["ETag"].strip('"'), head["ContentLength"])

    def run() -> Outcome:  # with a lease that has already ended
        return score_batch_file(
            s3, obj, loaded_models, input_prefix="batch/input/", output_prefix="batch/output/",
            rows_per_inference=4, lease_until=1.0,
        )  # fmt: skip

    outcomes: list[Outcome] = []
    run_a = threading.Thread(target=lambda: outcomes.append(run()), name=HELD)
    run_a.start()
    assert held.inside.wait(WAIT_S)
    run_b = run()
    held.go_on.set()
    run_a.join(WAIT_S)
    assert (outcomes[0].status, run_b.status) == ("duplicate", "scored")
    summary, results, errors = outputs(s3, SUMMARY)
    assert run_b.summary is not None
    assert summary["run_id"] == run_b.summary.run_id
    assert summary["outputs"]["results"] == f"{RUNS}{run_b.summary.run_id}.out.jsonl"
    assert summary["outputs"]["errors"] == f"{RUNS}{run_b.summary.run_id}.errors.jsonl"
    assert (len(results), len(errors)) == (summary["scored"], summary["failed"]) == (6, 0)
    # A's files exist, complete, but nothing points at them
    assert outcomes[0].summary is not None
    assert f"{outcomes[0].summary.run_id}.out.jsonl" in run_files(s3)


@pytest.mark.parametrize("s3", [False, True], ids=["unversioned", "versioned"], indirect=True)
def test_an_older_version_finishing_last_never_replaces_the_newer(
    s3: Any,
    sandbox: Callable[[str], BatchFunction],
    event: Callable[[], dict],
    held: Held,
) -> None:
    # given version 1 being scored, held inside its first inference
    put(s3, KEY, [json.dumps({"id": "old", "text": "version one"})])
    first, responses = event(), []
    older = threading.Thread(target=lambda: responses.append(invoke(sandbox("batch-old"), first)), name=HELD)
    older.start()
    assert held.inside.wait(WAIT_S)
    # when version 2 is uploaded and scored meanwhile, and only then version 1's run finishes
    put(s3, KEY, [json.dumps({"id": "new", "text": "version two"}), json.dumps({"id": "new2", "text": "more"})])
    assert invoke(sandbox("batch-new"), event()) == {"batchItemFailures": []}
    newer = read_summary(s3, SUMMARY)
    held.go_on.set()
    older.join(WAIT_S)
    # then version 1's run ends without committing, and the summary and its files stay version 2's
    assert responses == [{"batchItemFailures": []}]
    summary, results, _ = outputs(s3, SUMMARY)
    assert summary == newer
    assert summary["input"]["etag"] == s3.head_object(Bucket=BUCKET, Key=KEY)["ETag"].strip('"')
    assert [row["id"] for row in results] == ["new", "new2"]


def test_a_new_model_version_scores_the_file_again(
    s3: Any,
    sandbox: Callable[[str], BatchFunction],
    event: Callable[[], dict],
    predictions: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put(s3, KEY, [json.dumps({"text": "scored by each model version"})])
    function, message = sandbox("batch"), event()
    assert invoke(function, message) == {"batchItemFailures": []}
    first = read_summary(s3, SUMMARY)
    # when the model is upgraded and the same notification is delivered again
    monkeypatch.setattr(ServedModel, "version", property(lambda self: "9.9.9"))
    assert invoke(function, message) == {"batchItemFailures": []}
    # then the file is scored again, and the summary says by which version
    second = read_summary(s3, SUMMARY)
    assert (first["version"], second["version"]) == (first["version"], "9.9.9")
    assert second["run_id"] != first["run_id"]
    assert predictions == [1, 1]
    # while a repeat for the same model version is skipped
    assert invoke(function, message) == {"batchItemFailures": []}
    assert predictions == [1, 1]


class Killed(BaseException):
    """What a timeout or an out-of-memory kill looks like from inside: nothing after it runs."""


def test_a_killed_run_holds_its_input_only_until_its_deadline(
    s3: Any,
    sandbox: Callable[[str], BatchFunction],
    event: Callable[[], dict],
    loaded_models: Mapping[str, ServedModel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a run killed halfway, in an invocation with 1.5 s to live (a killed process cleans nothing up)
    put(s3, KEY, [json.dumps({"text": f"row {i}"}) for i in range(6)])
    model, message = loaded_models["sentiment"], event()
    original = model.predict_instances

    def killed(instances: list[Any]) -> Any:
        raise Killed

    monkeypatch.setattr(model, "predict_instances", killed)
    monkeypatch.setattr(MultipartWriter, "abort", lambda self: None)
    started = time.monotonic()
    with pytest.raises(Killed):
        sandbox("batch-killed").lambda_handler(message, context(timeout_s=1.5))
    monkeypatch.setattr(model, "predict_instances", original)
    # then nothing of it is visible but its lease (its multipart uploads stay incomplete)
    assert [key for key in all_keys(s3) if key.startswith("batch/output/")] == [
        f"{RUNS}{name}" for name in run_files(s3) if name.endswith(".claim.json")
    ]
    # and a retry before its deadline is left for later, while one after it scores the file
    assert isinstance(invoke(sandbox("batch-early"), message), BatchProcessingError)
    time.sleep(max(0.0, 1.6 - (time.monotonic() - started)))
    assert invoke(sandbox("batch-late"), message) == {"batchItemFailures": []}
    summary, results, _ = outputs(s3, SUMMARY)
    assert len(results) == summary["scored"] == 6
