"""The deploy gate, both sides: good packages pass; missing, tampered or parity-failed ones stop synth by name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog import ROOT, Target, load_catalog
from functions.runtime.package import read_manifest
from functions.runtime.package import write_package as write_package_manifest
from registry.lock import VersionLock, lock_for, write_lock
from stacks.deploy_gate import TRITON_ARCHIVE, DeployGateError, verify_package, verify_packages
from tests.infra.package_factory import write_manifest, write_package


@pytest.fixture
def good(tmp_path: Path) -> dict[str, Path]:
    return {entry.name: write_package(tmp_path / entry.name, entry) for entry in load_catalog().models.values()}


def test_good_packages_pass(good: dict[str, Path]) -> None:
    verified = verify_packages(load_catalog().models.values(), next(iter(good.values())).parent)
    assert set(verified) == set(good)
    assert all(package.manifest.parity.passed for package in verified.values())


def test_the_sessions_real_packages_pass(infra_packages: dict[str, Path]) -> None:
    for name, path in infra_packages.items():
        assert verify_package(load_catalog().model(name), path).name == name


def test_missing_package_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(DeployGateError, match=r"model 'sentiment': no package at"):
        verify_package(load_catalog().model("sentiment"), tmp_path / "sentiment")


def test_tampered_file_is_refused_by_name(good: dict[str, Path]) -> None:
    (good["digits"] / "model.onnx").write_bytes(b"swapped after the parity check")
    with pytest.raises(DeployGateError, match=r"model 'digits': .*(sha256|bytes)"):
        verify_package(load_catalog().model("digits"), good["digits"])


def test_failed_parity_is_refused_by_name(good: dict[str, Path]) -> None:
    entry = load_catalog().model("sentiment")
    write_manifest(good["sentiment"], entry, parity=False)
    with pytest.raises(DeployGateError, match=r"model 'sentiment': .*parity"):
        verify_package(entry, good["sentiment"])


def test_gpu_model_without_triton_repository_is_refused(good: dict[str, Path]) -> None:
    (entry,) = load_catalog().on(Target.SAGEMAKER)
    package = good[entry.name]
    (package / TRITON_ARCHIVE).unlink()
    write_manifest(package, entry)
    with pytest.raises(DeployGateError, match=rf"model '{entry.name}': .*{TRITON_ARCHIVE}"):
        verify_package(entry, package)


def test_package_of_another_model_is_refused(good: dict[str, Path]) -> None:
    with pytest.raises(DeployGateError, match=r"model 'sentiment': the package .* is 'digits'"):
        verify_package(load_catalog().model("sentiment"), good["digits"])


@pytest.fixture
def packages_in_repo() -> Iterator[Path]:
    """app.py only accepts a packagesDir inside the repository (the image build context): a throwaway one there."""
    root = ROOT / "build" / f"infra-gate-{uuid.uuid4().hex[:8]}"
    for entry in load_catalog().models.values():
        write_package(root / entry.name, entry)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_cdk_app_refuses_to_synthesize_a_tampered_package(packages_in_repo: Path, tmp_path: Path) -> None:
    # given a package whose graph changed after its manifest was written
    (packages_in_repo / "sentiment" / "model.onnx").write_bytes(b"tampered")
    write_lock(
        lock_for({e.name: packages_in_repo / e.name for e in load_catalog().models.values()}),
        packages_in_repo / "lock.json",
    )
    context = {
        "packagesDir": str(packages_in_repo.relative_to(ROOT)),
        "versionLock": str((packages_in_repo / "lock.json").relative_to(ROOT)),
    }
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(tmp_path)}
    # when the CDK CLI would run the app
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300
    )
    # then it stops before synthesizing anything, naming the model
    assert result.returncode == 2, result.stderr[-2000:]
    assert "deploy gate: model 'sentiment'" in result.stderr
    assert not list(tmp_path.glob("*.template.json"))


# --- the quality side: only the registry's approved version (as the version lock records it) ships ---------------


def test_the_approved_versions_pass_and_are_what_ships(good: dict[str, Path]) -> None:
    lock = lock_for(good)
    verified = verify_packages(load_catalog().models.values(), next(iter(good.values())).parent, lock)
    assert {name: package.version for name, package in verified.items()} == {
        name: locked.version for name, locked in lock.models.items()
    }


def test_a_package_that_is_not_the_approved_version_is_refused(good: dict[str, Path]) -> None:
    # given a lock whose approved digits version is another one than the package on disk
    lock = lock_for(good)
    other = lock.models["digits"].model_copy(update={"version": "20991231T235959Z"})
    lock = lock.with_version("digits", other)
    # then the gate names the model, the package's version and the approved one
    with pytest.raises(
        DeployGateError, match=r"model 'digits': package .* is not the approved version 20991231T235959Z"
    ):
        verify_packages(load_catalog().models.values(), good["digits"].parent, lock)


def test_a_package_changed_under_the_approved_version_number_is_refused(good: dict[str, Path]) -> None:
    lock = lock_for(good)
    entry = load_catalog().model("sentiment")
    manifest = read_manifest(good["sentiment"])
    # same version, other contents (re-exported in place): the manifest digest no longer matches the lock
    write_package_manifest(good["sentiment"], manifest.model_copy(update={"metrics": {"test_accuracy": 0.1}}))
    with pytest.raises(DeployGateError, match=r"model 'sentiment': .* differs from the approved one"):
        verify_packages([entry], good["sentiment"].parent, lock)


def test_a_model_without_an_approved_version_is_refused(good: dict[str, Path]) -> None:
    lock = VersionLock(models={k: v for k, v in lock_for(good).models.items() if k != "embeddings"})
    with pytest.raises(DeployGateError, match=r"model 'embeddings': no approved version"):
        verify_packages(load_catalog().models.values(), good["digits"].parent, lock)


def test_versioned_layout_ships_the_locked_version_not_the_newest(tmp_path: Path) -> None:
    # given two versions of digits on disk, the older one approved
    entry = load_catalog().model("digits")
    older = write_package(tmp_path / "digits" / "v1", entry)
    newer = write_package(tmp_path / "digits" / "v2", entry)
    for folder, version in ((older, "20261201T000001Z"), (newer, "20261201T000002Z")):
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({**manifest, "version": version}))
        folder.rename(folder.with_name(version))
    lock = lock_for({"digits": tmp_path / "digits" / "20261201T000001Z"})
    # then the gate checks and returns the approved one
    assert verify_packages([entry], tmp_path, lock)["digits"].version == "20261201T000001Z"


def test_cdk_app_refuses_a_package_that_is_not_the_approved_version(packages_in_repo: Path, tmp_path: Path) -> None:
    # given intact packages, and a version lock approving another digits version
    approved = lock_for({entry.name: packages_in_repo / entry.name for entry in load_catalog().models.values()})
    approved = approved.with_version("digits", approved.models["digits"].model_copy(update={"version": "20991231T0Z"}))
    lock_path = packages_in_repo / "models.lock.json"
    write_lock(approved, lock_path)
    context = {"packagesDir": str(packages_in_repo.relative_to(ROOT)), "versionLock": str(lock_path.relative_to(ROOT))}
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(tmp_path)}
    # when the CDK CLI would run the app
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300
    )
    # then it stops before synthesizing anything, naming the model and both versions
    assert result.returncode == 2, result.stderr[-2000:]
    assert "deploy gate: model 'digits'" in result.stderr
    assert "is not the approved version 20991231T0Z" in result.stderr
    assert not list(tmp_path.glob("*.template.json"))
