"""Versions in the running local stack: every registered version listed and served by path, a version registered
while the stack runs appears at once, and promote/rollback switch the served version under load with no failure."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from catalog import ROOT
from local.clients import client
from local.config import LocalConfig
from local.stack import LocalStack
from registry.local_registry import RegistryHome, local_registry, register_package
from registry.lock import read_lock
from registry.model_registry import ModelRegistry
from registry.store import PackageStore, approved_package_dir
from tests.integration.stack_client import http
from tests.registry_versions import add_version
from tests.unit.serving_fixtures import served_packages

V1, V2, V3 = "20261201T000001Z", "20261201T000002Z", "20261201T000003Z"
SWITCH_BUDGET_S = 10.0
PIXELS = {"name": "pixels", "datatype": "FP32", "shape": [1, 8, 8], "data": [float(i % 17) for i in range(64)]}


@pytest.fixture(scope="module")
def digits(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return served_packages(request, tmp_path_factory)["digits"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> RegistryHome:
    root = tmp_path_factory.mktemp("versions-home")
    home = RegistryHome(root / "models", root / "registry", root / "models.lock.json")
    store = PackageStore(home.packages_dir)
    for version, accuracy in ((V1, 0.95), (V2, 0.955)):
        register_package(add_version(store, digits, version, {"test_accuracy": accuracy}), home)
    return home


def start_stack(home: RegistryHome) -> LocalStack:
    config = LocalConfig(api_port=0, aws_port=0, sagemaker_port=0, bucket="model-serving-versions", poll_wait_s=1)
    packages = {"digits": approved_package_dir("digits", home.packages_dir, home.lock_path)}
    stack = LocalStack(config, packages, registry=home)
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="module")
def stack(home: RegistryHome) -> Iterator[LocalStack]:
    running = start_stack(home)
    yield running
    running.stop()


def registry_cli(home: RegistryHome, *arguments: str) -> str:
    command = [sys.executable, "-m", "registry", "--lock", str(home.lock_path), "--state-dir", str(home.state_dir)]
    done = subprocess.run([*command, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_metadata_lists_every_registered_version(stack: LocalStack) -> None:
    status, _, document = http(stack, "GET", "/v2/models/digits")
    assert status == 200
    assert document["versions"] == [V1, V2]


def test_any_registered_version_is_served_by_path(stack: LocalStack) -> None:
    status, _, served = http(stack, "POST", "/v2/models/digits/infer", {"inputs": [PIXELS]})
    assert (status, served["model_version"]) == (200, V1)
    status, _, other = http(stack, "POST", f"/v2/models/digits/versions/{V2}/infer", {"inputs": [PIXELS]})
    assert (status, other["model_version"]) == (200, V2)
    assert other["outputs"] == served["outputs"]  # the same graph, filed twice
    status, _, v1 = http(stack, "POST", "/v1/models/digits:predict", {"instances": [[[0.0] * 8] * 8]})
    assert (status, v1["model_version"]) == (200, V1)


def test_an_unknown_version_is_a_404_naming_the_versions(stack: LocalStack) -> None:
    status, _, document = http(stack, "POST", "/v2/models/digits/versions/19990101T000000Z/infer", {"inputs": [PIXELS]})
    assert status == 404
    assert f"versions: {V1}, {V2}" in document["error"]
    status, _, document = http(stack, "POST", "/v2/models/digits/versions/..%2F..%2Fetc/infer", {"inputs": [PIXELS]})
    assert status == 404


@dataclass
class Answer:
    sent: float
    at: float
    status: int
    version: str | None


class SteadyClient:
    """Clients sending v2 requests back to back, recording when each answer came and which version gave it."""

    def __init__(self, stack: LocalStack, threads: int = 2) -> None:
        self.stack = stack
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                status, _, document = http(self.stack, "POST", "/v2/models/digits/infer", {"inputs": [PIXELS]})
                version = document.get("model_version")
            except Exception:  # a refused or dropped connection is a failure as a client sees it
                status, version = 0, None
            self.answers.append(Answer(sent, time.monotonic(), status, version))

    def __enter__(self) -> SteadyClient:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def first_answer_from(self, version: str, after: float, timeout_s: float = 60.0) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen = [a.at for a in list(self.answers) if a.at > after and a.version == version]
            if seen:
                return seen[0]
            time.sleep(0.05)
        raise TimeoutError(f"no answer from {version} within {timeout_s:.0f} s")


def test_a_version_registered_while_the_stack_runs_appears(stack: LocalStack, home: RegistryHome, digits: Path) -> None:
    # when training files and registers a new version while the stack serves
    package = add_version(PackageStore(home.packages_dir), digits, V3, {"test_accuracy": 0.96})
    registered = register_package(package, home)
    # then it is registered in the stack's own moto (no restart), pending approval, and served by path
    assert stack.info is not None
    sagemaker = client("sagemaker", stack.info.aws_url, stack.info.admin)
    group = sagemaker.list_model_packages(ModelPackageGroupName=ModelRegistry.group_name("digits"))
    assert registered.status == "PendingManualApproval"
    assert len(group["ModelPackageSummaryList"]) == 3
    assert http(stack, "GET", "/v2/models/digits")[2]["versions"] == [V1, V2, V3]
    status, _, document = http(stack, "POST", f"/v2/models/digits/versions/{V3}/infer", {"inputs": [PIXELS]})
    assert (status, document["model_version"]) == (200, V3)


def test_promote_and_rollback_switch_under_load_with_no_failure(
    stack: LocalStack, home: RegistryHome, record_property: Any
) -> None:
    with SteadyClient(stack) as clients:
        time.sleep(1.0)  # traffic on the served version first
        # when a promotion is approved (the CLI writes the registry and the lock)
        promote_started = time.monotonic()
        out = registry_cli(home, "promote", "digits", V2)
        promoted = time.monotonic()
        to_v2 = clients.first_answer_from(V2, after=promote_started) - promoted
        time.sleep(1.0)
        rollback_started = time.monotonic()
        registry_cli(home, "rollback", "digits")
        rolled_back = time.monotonic()
        to_v1 = clients.first_answer_from(V1, after=rolled_back - 0.001) - rolled_back
        time.sleep(1.0)
    answers = clients.answers
    # then no request failed, and the served version switched both ways within the budget
    assert f"serving {V2} (was {V1})" in out
    assert [a for a in answers if a.status != 200] == []
    assert max(to_v2, 0.0) < SWITCH_BUDGET_S
    assert max(to_v1, 0.0) < SWITCH_BUDGET_S
    # once switched, it stays switched: every request sent after the first V2 answer is V2 until the rollback (one
    # already running on the old version when the alias moved still finishes there, as in Lambda)
    first_v2 = min(a.at for a in answers if a.version == V2)
    assert {a.version for a in answers if first_v2 <= a.sent and a.at < rollback_started} == {V2}
    assert read_lock(home.lock_path).models["digits"].version == V1
    deadline = time.monotonic() + 60  # the old versions retire after the aliases moved: the deploy ends then
    while len(stack.deployments) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [d.versions for d in stack.deployments] == [{"digits": V2}, {"digits": V1}]
    figures = {
        "requests": len(answers),
        "failures": 0,
        "promote_cli_s": round(promoted - promote_started, 2),
        "switch_after_promote_s": round(to_v2, 2),
        "rollback_cli_s": round(rolled_back - rollback_started, 2),
        "switch_after_rollback_s": round(to_v1, 2),
        "deploy_s": [round(d.seconds, 2) for d in stack.deployments],
    }
    record_property("switch", json.dumps(figures))
    print(f"\nversion switch under load: {json.dumps(figures)}")


def test_the_registry_survives_a_restart_of_the_stack(stack: LocalStack, home: RegistryHome) -> None:
    stack.stop()
    # a new stack (a new moto), loaded from the state on disk
    restarted = start_stack(home)
    try:
        assert restarted.info is not None
        with local_registry(home) as registry:  # the running stack's moto, found through running.json
            assert registry.sagemaker.meta.endpoint_url == restarted.info.aws_url
            assert [(v.version, v.status) for v in registry.versions("digits")] == [
                (V1, "Approved"),
                (V2, "Rejected"),
                (V3, "PendingManualApproval"),
            ]
        status, _, document = http(restarted, "POST", "/v2/models/digits/infer", {"inputs": [PIXELS]})
        assert (status, document["model_version"]) == (200, V1)
    finally:
        restarted.stop()
