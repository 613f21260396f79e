"""Handler fixtures: each handler module imported once, with MODELS_DIR pointing at real packages."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.serving_fixtures import models_dir_for, served_packages

SERVING_ENV = {
    "MAX_INSTANCES": json.dumps({"sentiment": 8, "embeddings": 16, "digits": 16}),
    "ORT_THREADS": "1",
    "BATCH_ROWS_PER_INFERENCE": "4",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "ModelServingTests",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def serving_packages(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return served_packages(request, tmp_path_factory)


@pytest.fixture(scope="session")
def models_dir(serving_packages: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models_dir_for(serving_packages, tmp_path_factory.mktemp("models"))


def import_handler(module_name: str, models_dir: Path, extra_env: dict[str, str] | None = None) -> Iterator[ModuleType]:
    """Import a handler module fresh under the serving environment (it loads its models at import, like Lambda init)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**SERVING_ENV, "MODELS_DIR": str(models_dir), **(extra_env or {})}.items():
            patch.setenv(name, value)
        sys.modules.pop(module_name, None)
        module = importlib.import_module(module_name)
        yield module
        sys.modules.pop(module_name, None)


@pytest.fixture(scope="session")
def api_handler(models_dir: Path) -> Iterator[ModuleType]:
    yield from import_handler("functions.api.handler", models_dir)


@pytest.fixture(scope="session")
def batch_handler(models_dir: Path) -> Iterator[ModuleType]:
    yield from import_handler("functions.batch.handler", models_dir)
