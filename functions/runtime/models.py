"""Served models: a verified package, its task processing and a backend, loaded once per process at init."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from functions.runtime.backends import InferenceBackend, OnnxBackend, SageMakerBackend
from functions.runtime.errors import TooManyInstancesError, UnknownModelError
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


class ServedModel:
    """decode -> preprocess -> backend -> postprocess, with the package's manifest as the contract."""

    def __init__(
        self, package: ModelPackage, processor: TaskProcessor, backend: InferenceBackend, max_instances: int
    ) -> None:
        self.package = package
        self.processor = processor
        self.backend = backend
        self.max_instances = max_instances
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

    def infer(self, inputs: Mapping[str, Any]) -> Inference:
        """Score a batch of API inputs; raises InputError (caller's fault) or BackendError (ours)."""
        prepared = self.processor.prepare(inputs)
        outputs = self.processor.finish(self.backend.run(prepared.feeds))
        return Inference(outputs=outputs, batch_size=prepared.batch_size, truncated=prepared.truncated)

    def check_batch_size(self, batch_size: int) -> None:
        """The per-request limit of the HTTP API (checked before decoding); batch files chunk by their own setting."""
        if batch_size > self.max_instances:
            raise TooManyInstancesError(
                f"{batch_size} instances in one request; model {self.name} accepts at most {self.max_instances}"
            )

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """API-level tensors in, API-level tensors out (text/pixels -> label/probabilities/embedding)."""
        return self.infer(inputs).outputs

    def warm_up(self) -> None:
        """One real run at init, so the first request does not pay for lazy allocations."""
        prepared = self.processor.prepare(self.processor.example_inputs())
        self.processor.finish(self.backend.run(prepared.feeds))
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
    model = ServedModel(package, processor, backend, settings.max_instances_for(package.name))
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
