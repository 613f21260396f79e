"""The registry of record against moto's SageMaker Model Registry and S3 (server mode): register, list, promote
through the gates, roll back; state saved on disk and loaded into a fresh moto."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog import ROOT, load_catalog
from registry.local_registry import RegistryHome, local_registry, register_package
from registry.lock import LockedVersion, lock_for, read_lock, write_lock
from registry.model_registry import ModelRegistry
from registry.promotion import PromotionRefusedError, promote, rollback
from registry.store import PackageStore
from tests.registry_versions import add_version
from tests.unit.serving_fixtures import served_packages

POLICY = load_catalog().model("digits").promotion
V1, V2, V3, V4 = "20261201T000001Z", "20261201T000002Z", "20261201T000003Z", "20261201T000004Z"


@pytest.fixture(scope="module")
def digits(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return served_packages(request, tmp_path_factory)["digits"]


def _home(root: Path) -> RegistryHome:
    return RegistryHome(root / "models", root / "registry", root / "models.lock.json")


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> Path:
    """Four versions trained and registered once: v1 first (approved), v2 +0.5 point, v3 -1.5 points, v4 +1."""
    root = tmp_path_factory.mktemp("registered")
    home = _home(root)
    store = PackageStore(home.packages_dir)
    for version, accuracy in ((V1, 0.95), (V2, 0.955), (V3, 0.935), (V4, 0.96)):
        register_package(add_version(store, digits, version, {"test_accuracy": accuracy}), home)
    return root


@pytest.fixture
def home(tmp_path: Path, registered: Path) -> RegistryHome:
    """A copy of the registered state (packages, saved registry, lock) for one test to change."""
    shutil.copytree(registered, tmp_path / "home")
    return _home(tmp_path / "home")


@pytest.fixture
def registry(home: RegistryHome) -> Iterator[ModelRegistry]:
    with local_registry(home) as opened:
        yield opened


def test_every_package_is_a_version_and_only_the_first_is_approved(home: RegistryHome, registry: ModelRegistry) -> None:
    versions = registry.versions("digits")
    assert [(v.version, v.number, v.status) for v in versions] == [
        (V1, 1, "Approved"),
        (V2, 2, "PendingManualApproval"),
        (V3, 3, "PendingManualApproval"),
        (V4, 4, "PendingManualApproval"),
    ]
    first = versions[0]
    assert first.package_uri == f"s3://model-serving-local/models/digits/{V1}/model.tar.gz"
    assert first.metrics["test_accuracy"] == pytest.approx(0.95)
    assert first.parity_passed
    assert len(first.archive_sha256) == 64
    described = registry.sagemaker.describe_model_package(ModelPackageName=first.arn)
    assert described["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"].endswith(f"digits/{V1}/evaluation.json")
    # the first version is the lock's, so `make demo` serves something from nothing
    assert read_lock(home.lock_path).models["digits"].version == V1


def test_a_stale_lock_is_repaired_by_a_fresh_registrys_first_version(tmp_path: Path, digits: Path) -> None:
    # given a lock naming a version no registry here holds (build/ cleaned, lock kept)
    home = _home(tmp_path)
    write_lock(
        lock_for({"digits": digits}).with_version("digits", LockedVersion(version="x", manifest_sha256="0" * 64)),
        home.lock_path,
    )
    # when training registers a first version
    register_package(add_version(PackageStore(home.packages_dir), digits, V1, {"test_accuracy": 0.9}), home)
    # then the lock names it, so the stack can serve it
    assert read_lock(home.lock_path).models["digits"].version == V1


def test_registering_again_is_idempotent(home: RegistryHome, registry: ModelRegistry) -> None:
    again = register_package(PackageStore(home.packages_dir).version_dir("digits", V2), home)
    assert (again.number, len(registry.versions("digits"))) == (2, 4)


def test_promote_then_rollback_moves_the_lock_and_the_approvals(home: RegistryHome, registry: ModelRegistry) -> None:
    # when v2 (better by half a point) is promoted
    promoted = promote(registry, "digits", V2, POLICY, home.lock_path)
    # then it is approved, served and locked, and v1 stays approved (kept for rollback)
    assert (promoted.served.version, promoted.previous and promoted.previous.version) == (V2, V1)
    assert registry.approved("digits").version == V2  # type: ignore[union-attr]
    assert read_lock(home.lock_path).models["digits"].version == V2
    # when rolled back
    rolled = rollback(registry, "digits", home.lock_path)
    # then v1 serves again and v2 is rejected, saying why
    statuses = {v.version: (v.status, v.approval_description) for v in registry.versions("digits")}
    assert rolled.served.version == V1
    assert statuses[V2] == ("Rejected", f"rolled back to {V1}")
    assert statuses[V1][0] == "Approved"
    assert read_lock(home.lock_path).models["digits"].version == V1
    # and a second rollback has nowhere to go
    with pytest.raises(PromotionRefusedError, match="only approved version"):
        rollback(registry, "digits", home.lock_path)


def test_the_quality_gate_refuses_a_worse_version(home: RegistryHome, registry: ModelRegistry) -> None:
    with pytest.raises(PromotionRefusedError, match=r"test_accuracy 0\.9350 is 1\.50 points below .* 0\.5 points"):
        promote(registry, "digits", V3, POLICY, home.lock_path)
    assert registry.version("digits", V3).status == "PendingManualApproval"
    assert read_lock(home.lock_path).models["digits"].version == V1


def test_the_gate_compares_with_the_catalog_tolerance(home: RegistryHome, registry: ModelRegistry) -> None:
    # both ways: with a 2-point tolerance the same version passes
    lenient = POLICY.model_copy(update={"tolerance_points": 2.0})
    assert promote(registry, "digits", V3, lenient, home.lock_path).served.version == V3


def test_force_needs_a_reason_and_records_it(home: RegistryHome, registry: ModelRegistry) -> None:
    with pytest.raises(PromotionRefusedError, match="--force needs --reason"):
        promote(registry, "digits", V3, POLICY, home.lock_path, force=True)
    done = promote(registry, "digits", V3, POLICY, home.lock_path, force=True, reason="hotfix for #12, label drift")
    recorded = registry.version("digits", V3)
    assert done.served.version == V3
    assert "reason: hotfix for #12, label drift" in recorded.approval_description
    assert recorded.metadata["forced"] == "true"
    assert recorded.metadata["forced_reason"] == "hotfix for  12  label drift"
    # the reason stays on the version after it stops being served
    rollback(registry, "digits", home.lock_path)
    assert registry.version("digits", V3).metadata["forced_reason"] == "hotfix for  12  label drift"


def test_a_tampered_package_is_refused_even_with_force(home: RegistryHome, registry: ModelRegistry) -> None:
    # given v4's archive in the bucket replaced after registration
    registry.s3.put_object(Bucket=registry.bucket, Key=f"models/digits/{V4}/model.tar.gz", Body=b"not the package")
    # then promote refuses it, naming the sha256, --force or not
    for force in (False, True):
        with pytest.raises(PromotionRefusedError, match=r"sha256 of model.tar.gz is .* the registry recorded"):
            promote(registry, "digits", V4, POLICY, home.lock_path, force=force, reason="x" if force else None)


def test_a_version_whose_parity_failed_is_refused(home: RegistryHome, registry: ModelRegistry) -> None:
    failed = registry.version("digits", V2)
    registry.set_status(failed, "PendingManualApproval", "parity recorded as failed", parity="failed")
    with pytest.raises(PromotionRefusedError, match="parity check failed"):
        promote(registry, "digits", V2, POLICY, home.lock_path)


def test_state_survives_into_a_fresh_moto(home: RegistryHome) -> None:
    with local_registry(home) as first:
        promote(first, "digits", V2, POLICY, home.lock_path)
    # a new moto process, loaded from build/registry-style state on disk
    with local_registry(home) as second:
        assert [(v.version, v.status) for v in second.versions("digits")][:2] == [(V1, "Approved"), (V2, "Approved")]
        assert second.approved("digits").version == V2  # type: ignore[union-attr]
        # and the archives are back in the bucket: a rollback verifies v1's sha256 from S3
        assert rollback(second, "digits", home.lock_path).served.version == V1


def test_the_cli_verbs(home: RegistryHome) -> None:
    def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "registry", "--lock", str(home.lock_path), "--state-dir", str(home.state_dir)]
        return subprocess.run([*command, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=120)

    table = cli("versions", "digits")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["#", "version", "status", "metrics", "created", "served"]
    assert [row.split()[:3] for row in rows] == [
        ["1", V1, "Approved"],
        ["2", V2, "PendingManualApproval"],
        ["3", V3, "PendingManualApproval"],
        ["4", V4, "PendingManualApproval"],
    ]
    assert [row.rstrip().endswith("*") for row in rows] == [True, False, False, False]  # the served one
    diff = cli("diff", "digits", V1, V3)
    assert diff.returncode == 0
    assert any(
        line.split() == ["test_accuracy", "0.9500", "0.9350", "-1.50", "points"] for line in diff.stdout.splitlines()
    )
    refused = cli("promote", "digits", V3)
    assert refused.returncode == 1
    assert "1.50 points below" in refused.stderr
    assert cli("promote", "digits", V3, "--force").returncode == 1
    forced = cli("promote", "digits", V3, "--force", "--reason", "accepted by the model owner")
    assert forced.returncode == 0, forced.stderr
    assert f"serving {V3} (was {V1})" in forced.stdout
    shown = cli("show", "digits", V3)
    assert "reason: accepted by the model owner" in shown.stdout
    assert "served" in shown.stdout.splitlines()[0]
    back = cli("rollback", "digits")
    assert f"serving {V1} (was {V3})" in back.stdout
    assert json.loads(home.lock_path.read_text())["models"]["digits"]["version"] == V1
