"""Handler fixtures: each function built by its factory from Settings, over models loaded once from real packages."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from functions.api.app import ApiFunction, create_api
from functions.runtime.models import ServedModel, load_models
from functions.runtime.settings import Settings
from tests.unit.serving_fixtures import models_dir_for, served_packages


@pytest.fixture(scope="session")
def serving_packages(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return served_packages(request, tmp_path_factory)


@pytest.fixture(scope="session")
def serving_settings(serving_packages: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        models_dir=models_dir_for(serving_packages, tmp_path_factory.mktemp("models")),
        max_instances={"sentiment": 8, "embeddings": 16, "digits": 16},
        ort_threads=1,
        batch_rows_per_inference=4,
        service_name="model-serving-tests",
        metrics_namespace="ModelServingTests",
    )


@pytest.fixture(scope="session")
def loaded_models(serving_settings: Settings) -> Mapping[str, ServedModel]:
    """Verified and warmed once per session, as one Lambda sandbox's init would."""
    return load_models(serving_settings)


@pytest.fixture(scope="session")
def api_handler(serving_settings: Settings, loaded_models: Mapping[str, ServedModel]) -> ApiFunction:
    return create_api(serving_settings, loaded_models)
