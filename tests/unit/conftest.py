"""Serving unit-test fixtures: verified packages (real from training when available) and the models they load."""

from __future__ import annotations

from pathlib import Path

import pytest

from functions.runtime.models import ServedModel, load_models
from functions.runtime.settings import Settings
from tests.unit.serving_fixtures import models_dir_for, served_packages


@pytest.fixture(scope="session")
def serving_packages(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return served_packages(request, tmp_path_factory)


@pytest.fixture(scope="session")
def served_models(
    serving_packages: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, ServedModel]:
    models_dir = models_dir_for(serving_packages, tmp_path_factory.mktemp("models"))
    return load_models(Settings(models_dir=models_dir, ort_threads=1, max_instances={"sentiment": 8}))
