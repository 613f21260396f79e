"""Served models: a verified package, its task processing and a backend, loaded once per process at init."""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic
from typing import Any

import numpy as np

from functions.runtime.backends import InferenceBackend, OnnxBackend
from functions.runtime.bucketing import run_in_groups
from functions.runtime.capture import Capture
from functions.runtime.endpoint import SageMakerBackend, chunk_workers, endpoint_client_config
from functions.runtime.errors import BackendError, OutputError, UnknownModelError
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
from functions.runtime.tasks import Prepared, TaskProcessor, processor_for

logger = logging.getLogger(__name__)

# How long a remote model's readiness stands before it is asked again: a success (a probe or any real call), and a
# failure, which is re-asked sooner so a recovered endpoint is seen recovered.
READY_TTL_S = 30.0
NOT_READY_TTL_S = 5.0


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
    instances and batch rows); the model does not check them again. A batch of texts runs length-bucketed
    (`functions.runtime.bucketing`) unless `bucketing` is off.
    """

    def __init__(
        self, package: ModelPackage, processor: TaskProcessor, backend: InferenceBackend, *, bucketing: bool = True
    ) -> None:
        self.package = package
        self.processor = processor
        self.backend = backend
        self.bucketing = bucketing
        self.warmed = False
        self.capture: Capture | None = None  # set once warm: warm-up and readiness probes are not traffic
        self._remote_ready = False
        self._remote_ready_until = 0.0  # monotonic() when the remote answer goes stale

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

    @property
    def ready(self) -> bool:
        """In process: warmed up at init. On an endpoint: what a recent call said, else a small probe call (cached),
        so a front whose endpoint is down or still creating reports not ready."""
        if not self.backend.remote:
            return self.warmed
        if monotonic() >= self._remote_ready_until:
            try:
                self.score(self.processor.example_batch())
            except BackendError as error:
                logger.warning("model %s: endpoint not ready: %s", self.name, error)
                self._remote_answered(ready=False)
        return self._remote_ready

    def _remote_answered(self, *, ready: bool) -> None:
        self._remote_ready = ready
        self._remote_ready_until = monotonic() + (READY_TTL_S if ready else NOT_READY_TTL_S)

    def check_batch(self, value: Any) -> Any:
        return self.processor.check_batch(value)

    def check_instance(self, value: Any) -> Any:
        return self.processor.check_instance(value)

    def score(self, batch: Any) -> tuple[Prepared, dict[str, np.ndarray]]:
        """preprocess -> backend -> postprocess and nothing else; raises BackendError when the graph's runner fails."""
        prepared = self.processor.prepare(batch)
        backend = self.backend
        graph_outputs = run_in_groups(
            prepared.feeds,
            backend.run_many,
            max_rows=backend.max_rows,
            call_cost_tokens=backend.call_cost_tokens,
            bucketing=self.bucketing,
        )
        outputs = self.processor.finish(graph_outputs)
        check_finite(outputs)
        if self.backend.remote:
            self._remote_answered(ready=True)
        return prepared, outputs

    def infer(self, batch: Any) -> Inference:
        """Score a checked batch of a caller's (offered to data capture, which samples it or not)."""
        prepared, outputs = self.score(batch)
        if self.capture is not None:
            self.capture.offer(batch, prepared, outputs)
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
        self.score(self.processor.example_batch())
        self.warmed = True


def check_finite(outputs: Mapping[str, np.ndarray]) -> None:
    """NaN and infinity are not JSON: an answer holding them is refused here, once for every path (the API's encoder
    would write them as null, the batch path's as invalid JSON)."""
    for name, array in outputs.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise OutputError(f"the model's output {name!r} holds NaN or infinite values for this input")


def package_dirs(models_dir: Path) -> list[Path]:
    """One package per subfolder of MODELS_DIR, or MODELS_DIR itself when it is a single package."""
    if (models_dir / MANIFEST_FILE).is_file():
        return [models_dir]
    if not models_dir.is_dir():
        raise PackageError(f"MODELS_DIR {models_dir} does not exist")
    return sorted(path for path in models_dir.iterdir() if (path / MANIFEST_FILE).is_file())


def load_model(package: ModelPackage, settings: Settings, sagemaker_client: Any = None) -> ServedModel:
    """One served model; the backend is the SageMaker endpoint when SAGEMAKER_ENDPOINTS names this model.

    An endpoint model is not warmed from here (a cold start should not wait on the network): its readiness is asked
    when someone asks for it, or learnt from its first call.
    """
    processor = processor_for(package)
    endpoint = settings.sagemaker_endpoints.get(package.name)
    if not endpoint:
        session = create_session(package.graph_path, settings.intra_op_threads)
        onnx = OnnxBackend(session, processor.graph_output_names)
        model = ServedModel(package, processor, onnx, bucketing=settings.length_bucketing)
        model.warm_up()
        model.capture = capture_for(package, processor, settings)
        return model
    max_batch = settings.sagemaker_max_batch.get(package.name)
    largest = max(settings.max_instances_for(package.name), settings.batch_rows_per_inference)
    workers = chunk_workers(largest, max_batch)
    if sagemaker_client is None:
        import boto3  # only functions with a SageMaker-placed model need the client

        config = endpoint_client_config(settings.function_timeout_s, max_connections=max(10, workers))
        sagemaker_client = boto3.client("sagemaker-runtime", config=config)
    backend = SageMakerBackend(
        sagemaker_client, endpoint, processor.graph_output_names, max_batch=max_batch, workers=workers
    )
    model = ServedModel(package, processor, backend, bucketing=settings.length_bucketing)
    model.capture = capture_for(package, processor, settings)
    return model


def capture_for(package: ModelPackage, processor: TaskProcessor, settings: Settings) -> Capture | None:
    """The model's data capture at its catalog rate (CAPTURE_RATES), or None where the rate is 0 or unset."""
    rate = settings.capture_rates.get(package.name, 0.0)
    if rate <= 0.0:
        return None
    return Capture(package.name, package.version, processor, rate, package.name in settings.capture_inputs)


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


VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ModelVersions:
    """The served models, plus any other registered version of them, loaded on demand from `versions_dir`.

    At most `version_cache_size` other versions stay loaded (least recently used goes first), so a client walking
    through old versions cannot exhaust the function's memory.
    """

    def __init__(self, served: Mapping[str, ServedModel], settings: Settings) -> None:
        self.served = served
        self.settings = settings
        self._loaded: OrderedDict[tuple[str, str], ServedModel] = OrderedDict()

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The served model, or the named version of it (UnknownModelError when it is not registered here)."""
        model = get_model(self.served, name)
        if version is None or version == model.version:
            return model
        key = (name, version)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        if version not in self.versions(name):
            raise UnknownModelError(
                f"model {name!r} has no version {version!r} (versions: {', '.join(self.versions(name))})"
            )
        if name in self.settings.sagemaker_endpoints:
            raise UnknownModelError(
                f"model {name!r} runs on its endpoint, which serves version {model.version} only; not {version!r}"
            )
        assert self.settings.versions_dir is not None  # versions() lists only the served one without it
        package = load_package(self.settings.versions_dir / name / version)
        loaded = load_model(package, self.settings)
        logger.info("loaded model %s %s on demand", name, version)
        self._loaded[key] = loaded
        while len(self._loaded) > self.settings.version_cache_size:
            self._loaded.popitem(last=False)
        return loaded

    def versions(self, name: str) -> list[str]:
        """Every version of `name` this function can serve, oldest first: the served one and the registered ones."""
        served = get_model(self.served, name).version
        folder = self.settings.versions_dir / name if self.settings.versions_dir else None
        found = {served}
        if folder is not None and folder.is_dir():
            found |= {
                child.name
                for child in folder.iterdir()
                if VERSION_PATTERN.match(child.name) and (child / MANIFEST_FILE).is_file()
            }
        return sorted(found)


def get_model(models: Mapping[str, ServedModel], name: str) -> ServedModel:
    try:
        return models[name]
    except KeyError:
        raise UnknownModelError(f"no model named {name!r} (served: {', '.join(sorted(models)) or 'none'})") from None
