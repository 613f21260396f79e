"""Served models: a verified package, its task processing and a backend, loaded once per process at init."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from functions.runtime.backends import InferenceBackend, OnnxBackend, SageMakerBackend
from functions.runtime.errors import UnknownModelError
from functions.runtime.package import (
    MANIFEST_FILE,
    Manifest,
    ModelPackage,
    PackageError,
    load_package,
    read_manifest,
)
from functions.runtime.session import create_session
from functions.runtime.settings import Settings
from functions.runtime.tasks import TaskProcessor, processor_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inference:
    """API-level outputs plus what the caller should know about how they were made."""

    outputs: dict[str, np.ndarray]
    batch_size: int
    truncated: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Predictions:
    """One JSON-ready prediction per instance, in order, and which instances were truncated."""

    items: list[Any]
    truncated: list[int]


class ServedModel:
    """preprocess -> backend -> postprocess, with the package's manifest as the contract.

    Callers hand in batches already checked at their edge (`check_batch` for v2 tensors, `check_instance` for v1
    instances and batch rows); the model does not check them again.
    """

    def __init__(self, package: ModelPackage, processor: TaskProcessor, backend: InferenceBackend) -> None:
        self.package = package
        self.processor = processor
        self.backend = backend
        self.ready = False

    @property
    def name(self) -> str:
        return self.package.manifest.name

    @property
    def version(self) -> str:
        return self.package.manifest.version

    @property
    def manifest(self) -> Manifest:
        return self.package.manifest

    @property
    def input_name(self) -> str:
        return self.processor.input_name

    def check_batch(self, value: Any) -> Any:
        return self.processor.check_batch(value)

    def check_instance(self, value: Any) -> Any:
        return self.processor.check_instance(value)

    def infer(self, batch: Any) -> Inference:
        """Score a checked batch; raises BackendError when the graph's runner fails."""
        prepared = self.processor.prepare(batch)
        outputs = self.processor.finish(self.backend.run(prepared.feeds))
        return Inference(outputs=outputs, batch_size=prepared.batch_size, truncated=prepared.truncated)

    def predict(self, batch: Any) -> dict[str, np.ndarray]:
        """API-level tensors out (label/probabilities/embedding) for a checked batch."""
        return self.infer(batch).outputs

    def predict_instances(self, instances: list[Any]) -> Predictions:
        """The one path for KServe v1 and batch files: checked instances in, one prediction each out."""
        inference = self.infer(self.processor.stack(instances))
        return Predictions(self.processor.predictions(inference.outputs), inference.truncated)

    def warm_up(self) -> None:
        """One real run at init, so the first request does not pay for lazy allocations."""
        self.infer(self.processor.example_batch())
        self.ready = True


def package_dirs(models_dir: Path) -> list[Path]:
    """One package per subfolder of MODELS_DIR, or MODELS_DIR itself when it is a single package."""
    if (models_dir / MANIFEST_FILE).is_file():
        return [models_dir]
    if not models_dir.is_dir():
        raise PackageError(f"MODELS_DIR {models_dir} does not exist")
    return sorted(path for path in models_dir.iterdir() if (path / MANIFEST_FILE).is_file())


def load_model(package: ModelPackage, settings: Settings, sagemaker_client: Any = None) -> ServedModel:
    """One served model; the backend is the SageMaker endpoint when SAGEMAKER_ENDPOINTS names this model."""
    processor = processor_for(package)
    endpoint = settings.sagemaker_endpoints.get(package.name)
    backend: InferenceBackend
    if endpoint:
        if sagemaker_client is None:
            import boto3  # only functions with a SageMaker-placed model need the client

            sagemaker_client = boto3.client("sagemaker-runtime")
        backend = SageMakerBackend(sagemaker_client, endpoint, processor.graph_output_names)
    else:
        session = create_session(package.graph_path, settings.intra_op_threads)
        backend = OnnxBackend(session, processor.graph_output_names)
    model = ServedModel(package, processor, backend)
    if endpoint:
        model.ready = True  # a cold endpoint is not warmed from here; its own health check covers it
    else:
        model.warm_up()
    return model


def load_models(settings: Settings, sagemaker_client: Any = None) -> dict[str, ServedModel]:
    """Every package under MODELS_DIR, verified and warmed up; a bad package stops the init (never served)."""
    models: dict[str, ServedModel] = {}
    for path in package_dirs(settings.models_dir):
        on_endpoint = read_manifest(path).name in settings.sagemaker_endpoints
        package = load_package(path, with_graph=not on_endpoint)
        if package.name in models:
            raise PackageError(f"two packages named {package.name!r} under {settings.models_dir}")
        models[package.name] = load_model(package, settings, sagemaker_client)
        logger.info("loaded model %s %s (%s)", package.name, package.version, models[package.name].backend.name)
    return models


def get_model(models: Mapping[str, ServedModel], name: str) -> ServedModel:
    try:
        return models[name]
    except KeyError:
        raise UnknownModelError(f"no model named {name!r} (served: {', '.join(sorted(models)) or 'none'})") from None
