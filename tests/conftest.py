"""Fixtures shared by every suite: fake AWS credentials, real event payloads, a Lambda context, tiny real packages."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from catalog import load_catalog
from local.lambda_context import LambdaContext

EVENTS_DIR = Path(__file__).parent / "events"

# Enough training to exercise every step of the real pipeline in seconds, not minutes.
TEST_OVERRIDES: dict[str, dict[str, int | float | str | bool]] = {
    "sentiment": {"epochs": 1, "max_steps": 6, "batch_size": 8, "max_train_samples": 256, "max_eval_samples": 128},
    "embeddings": {"max_eval_samples": 64},
    "digits": {"epochs": 3},
}


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach a real AWS account."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "ModelServingTests")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")


@pytest.fixture
def load_event() -> Callable[[str], dict]:
    """A real event payload from tests/events/<name>.json (a fresh copy each call)."""

    def load(name: str) -> dict:
        return json.loads((EVENTS_DIR / f"{name}.json").read_text())

    return load


@pytest.fixture
def lambda_context() -> LambdaContext:
    """The context the local stack hands its functions (the same class), for a 25 s API-sized function."""
    return LambdaContext(function_name="model-serving-test", memory_limit_in_mb=2048, timeout_s=25)


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny but real model packages, trained and exported by the real pipeline once per test session."""
    from training.jobs.local_mode import train_local
    from training.jobs.request import JobRequest

    work = tmp_path_factory.mktemp("training")
    built: dict[str, Path] = {}
    for entry in load_catalog().models.values():
        request = JobRequest.create(
            entry,
            profile="demo",
            overrides=TEST_OVERRIDES.get(entry.name, {}),
            work_dir=work / entry.name,
            package_dir=work / "packages" / entry.name,
        )
        built[entry.name] = train_local(request)
    return built
