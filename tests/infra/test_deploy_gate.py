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
    context = {"packagesDir": str(packages_in_repo.relative_to(ROOT))}
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(tmp_path)}
    # when the CDK CLI would run the app
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300
    )
    # then it stops before synthesizing anything, naming the model
    assert result.returncode == 2, result.stderr[-2000:]
    assert "deploy gate: model 'sentiment'" in result.stderr
    assert not list(tmp_path.glob("*.template.json"))
