"""Fixture helpers shared by the serving suites: which packages to serve, and a MODELS_DIR that holds them."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from tests.unit.handmade_packages import build_packages


def training_pipeline_available() -> bool:
    """True once the training pipeline's `train_local` (used by the root `packages` fixture) exists."""
    try:
        local_mode = importlib.import_module("training.jobs.local_mode")
    except ImportError:
        return False
    return hasattr(local_mode, "train_local")


def served_packages(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real `packages` from the training pipeline when it is there, else hand-built graphs of the same contract."""
    # SERVING_TEST_PACKAGES=handmade runs the serving suites in seconds, without training (e.g. while iterating).
    if os.environ.get("SERVING_TEST_PACKAGES") != "handmade" and training_pipeline_available():
        return request.getfixturevalue("packages")
    return build_packages(tmp_path_factory.mktemp("handmade-packages"))


def models_dir_for(packages: dict[str, Path], root: Path) -> Path:
    """MODELS_DIR layout: one subfolder per model (symlinks, so nothing is copied)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, path in packages.items():
        (root / name).symlink_to(path, target_is_directory=True)
    return root
