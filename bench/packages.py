"""Which model packages the bench measures: the demo packages `make demo` builds, or tiny ones for --quick."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from catalog import ROOT, load_catalog
from registry.store import approved_package_dir

QUICK_DIR = ROOT / "build" / "bench" / "quick"
APPROVED_DIR = ROOT / "build" / "bench" / "approved-models"
DEMO_WORK_ROOT = ROOT / "build" / "training"  # training.submit's work folders (<name>-<profile>), checkpoints kept
# Enough training to run every step of the real pipeline in seconds; the figures mean nothing, the code path does.
QUICK_OVERRIDES: dict[str, dict[str, int | float | str | bool]] = {
    "sentiment": {"epochs": 1, "max_steps": 6, "batch_size": 8, "max_train_samples": 256, "max_eval_samples": 128},
    "embeddings": {"max_eval_samples": 64},
    "digits": {"epochs": 3},
}


@dataclass(frozen=True)
class PackageSet:
    """One folder holding a package per catalog model (the MODELS_DIR layout), plus the jobs' work folders."""

    models_dir: Path
    work_dirs: tuple[Path, ...]  # where the training jobs' checkpoints may still be
    origin: str

    def package(self, name: str) -> Path:
        return self.models_dir / name


def _complete(models_dir: Path) -> bool:
    return all((models_dir / name / "manifest.json").is_file() for name in load_catalog().models)


def approved_packages(models_dir: Path) -> Path:
    """A MODELS_DIR-style folder of each model's approved version (links into build/models/<name>/<version>/)."""
    shutil.rmtree(models_dir, ignore_errors=True)
    models_dir.mkdir(parents=True)
    for name in load_catalog().models:
        approved = approved_package_dir(name)
        if (approved / "manifest.json").is_file():
            (models_dir / name).symlink_to(approved.resolve(), target_is_directory=True)
    return models_dir


def demo_packages(build_if_missing: bool) -> PackageSet:
    """The approved versions `make models` leaves; trains them (about 15 min here) when asked and missing."""
    models_dir = approved_packages(APPROVED_DIR)
    if not _complete(models_dir):
        if not build_if_missing:
            raise FileNotFoundError("no approved package for every model in build/models; run `make models` first")
        subprocess.run([sys.executable, "-m", "training.submit", "--all", "--profile", "demo"], cwd=ROOT, check=True)
        models_dir = approved_packages(APPROVED_DIR)
    # training.submit names work folders <name>-<profile>[-<settings hash>]; newest first, so the latest job wins
    candidates = [path for name in load_catalog().models for path in DEMO_WORK_ROOT.glob(f"{name}-demo*")]
    work_dirs = tuple(sorted(candidates, key=lambda path: path.stat().st_mtime, reverse=True))
    return PackageSet(models_dir=models_dir, work_dirs=work_dirs, origin="make models (demo profile)")


def quick_packages(root: Path = QUICK_DIR) -> PackageSet:
    """Tiny real packages from the real pipeline (a few training steps), reused while their settings match."""
    from training.jobs.local_mode import train_local
    from training.jobs.request import JobRequest
    from training.submit import check_reuse

    models_dir = root / "models"
    work_dirs = []
    for entry in load_catalog().models.values():
        overrides = QUICK_OVERRIDES.get(entry.name, {})
        package_dir = models_dir / entry.name
        work_dir = root / "work" / entry.name
        work_dirs.append(work_dir)
        if not check_reuse(entry, profile="demo", overrides=overrides, package_dir=package_dir).reusable:
            request = JobRequest.create(
                entry, profile="demo", overrides=overrides, work_dir=work_dir, package_dir=package_dir
            )
            train_local(request)
    return PackageSet(models_dir=models_dir, work_dirs=tuple(work_dirs), origin="quick: tiny training runs")


def given_packages(models_dir: Path) -> PackageSet:
    """A folder the caller names (e.g. the test suite's session packages)."""
    if not _complete(models_dir):
        raise FileNotFoundError(f"{models_dir} lacks a package for some catalog model")
    work_dirs = tuple(models_dir.parent / name for name in load_catalog().models)
    return PackageSet(models_dir=models_dir, work_dirs=work_dirs, origin=f"given: {models_dir}")
