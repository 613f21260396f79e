"""Reuse of finished packages, and the CLI `make models` calls: reuse only what would be trained now."""

from __future__ import annotations

from pathlib import Path

import pytest

import catalog
from catalog import load_catalog
from functions.runtime.package import read_manifest, write_package
from registry.local_registry import RegistryHome
from registry.lock import read_lock
from tests.unit.handmade_packages import build_handmade_package
from training import submit
from training.jobs.request import JobRequest


def _finished_package(directory: Path, *, profile: str = "demo", overrides: dict | None = None) -> Path:
    """A verified digits package whose provenance says it was trained with the catalog's demo settings."""
    entry = load_catalog().model("digits")
    build_handmade_package("digits", directory)
    manifest = read_manifest(directory)
    job = JobRequest.create(
        entry,
        profile=profile,  # type: ignore[arg-type]
        overrides=overrides,
        job_name="digits-demo-20261123-093000",
        work_dir=directory.parent / "work",
    )
    hyperparameters = job.hyperparameters
    source = {"profile": profile, "hyperparameters": hyperparameters, "job_name": hyperparameters["job_name"]}
    metrics = {"test_accuracy": 0.98, "val_accuracy": 0.97}
    # manifest.json itself carries no checksum: rewriting it keeps the package verified
    write_package(directory, manifest.model_copy(update={"source": source, "metrics": metrics}))
    return directory


def test_a_package_trained_with_the_same_settings_is_reused(tmp_path: Path) -> None:
    package_dir = _finished_package(tmp_path / "digits")

    reuse = submit.check_reuse(load_catalog().model("digits"), profile="demo", package_dir=package_dir)

    assert reuse.reusable, reuse.reason
    assert reuse.package_dir == package_dir


def test_overrides_count_as_settings(tmp_path: Path) -> None:
    entry = load_catalog().model("digits")
    package_dir = _finished_package(tmp_path / "digits", overrides={"epochs": 3})

    assert submit.check_reuse(entry, profile="demo", overrides={"epochs": 3}, package_dir=package_dir).reusable
    reuse = submit.check_reuse(entry, profile="demo", package_dir=package_dir)
    assert not reuse.reusable
    assert reuse.reason == "hyperparameters changed: epochs"


def test_another_profile_is_retrained(tmp_path: Path) -> None:
    package_dir = _finished_package(tmp_path / "digits", profile="full")

    reuse = submit.check_reuse(load_catalog().model("digits"), profile="demo", package_dir=package_dir)

    assert not reuse.reusable
    assert "profile 'full'" in reuse.reason


def test_a_tampered_file_is_retrained(tmp_path: Path) -> None:
    package_dir = _finished_package(tmp_path / "digits")
    with (package_dir / "model.onnx").open("ab") as graph:
        graph.write(b"\0")

    reuse = submit.check_reuse(load_catalog().model("digits"), profile="demo", package_dir=package_dir)

    assert not reuse.reusable
    assert "model.onnx" in reuse.reason


def test_a_package_whose_parity_failed_is_retrained(tmp_path: Path) -> None:
    package_dir = _finished_package(tmp_path / "digits")
    manifest = read_manifest(package_dir)
    write_package(
        package_dir, manifest.model_copy(update={"parity": manifest.parity.model_copy(update={"passed": False})})
    )

    reuse = submit.check_reuse(load_catalog().model("digits"), profile="demo", package_dir=package_dir)

    assert not reuse.reusable
    assert "parity" in reuse.reason


def test_no_package_means_training(tmp_path: Path) -> None:
    reuse = submit.check_reuse(load_catalog().model("digits"), profile="demo", package_dir=tmp_path / "digits")

    assert not reuse.reusable
    assert reuse.reason == "no package yet"


def test_the_cli_reuses_a_current_package_and_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # given: build/models/digits already holds what `make models` would train, in the one-folder layout of before
    monkeypatch.setattr(catalog, "PACKAGES_DIR", tmp_path / "models")
    monkeypatch.setattr(submit, "WORK_ROOT", tmp_path / "training")
    home = RegistryHome(tmp_path / "models", tmp_path / "registry", tmp_path / "models.lock.json")
    monkeypatch.setattr(submit, "HOME", home)
    version = read_manifest(_finished_package(tmp_path / "models" / "digits")).version
    package_dir = tmp_path / "models" / "digits" / version  # filed as a version

    # when
    status = submit.main(["--model", "digits", "--profile", "demo"])

    # then: no job ran
    out = capsys.readouterr().out
    assert status == 0
    assert f"[digits] reusing {package_dir}" in out
    assert "test_accuracy=0.9800" in out
    assert "parity passed" in out
    assert "precision fp32" in out
    assert "1/1 packages ready" in out
    assert not (tmp_path / "training").exists()
    # and registered: the model's first version is approved and locked as the one served
    assert f"[digits] registered {version} as model package version 1: Approved" in out
    assert read_lock(home.lock_path).models["digits"].version == version


def test_the_cli_needs_a_role_and_bucket_for_sagemaker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(catalog, "PACKAGES_DIR", tmp_path / "models")
    monkeypatch.delenv("SAGEMAKER_ROLE_ARN", raising=False)
    monkeypatch.delenv("MODELS_BUCKET", raising=False)

    with pytest.raises(SystemExit, match="--role-arn and --bucket"):
        submit.main(["--model", "digits", "--mode", "sagemaker"])


def test_the_cli_refuses_an_unknown_model() -> None:
    with pytest.raises(catalog.CatalogError, match="no model named 'nope'"):
        submit.main(["--model", "nope"])
