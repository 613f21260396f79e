"""The frozen settings every stack is built from: app.py fills it once from context, env and the catalog."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catalog import PACKAGES_DIR, ROOT, Catalog, ModelEntry, Target
from functions.runtime.settings import Settings
from registry.lock import VersionLock
from registry.store import locked_package_dir

DOCKERFILE = "functions/Dockerfile"
IMAGE_MODELS_DIR = "/var/task/models"
API_HANDLER = "functions.api.handler.lambda_handler"
BATCH_HANDLER = "functions.batch.handler.lambda_handler"
DRIFT_HANDLER = "functions.monitoring.handler.lambda_handler"
SERVICE_NAME = "model-serving"


@dataclass(frozen=True)
class JwtSettings:
    """An OIDC issuer and audience: when set, the HTTP API takes JWTs instead of SigV4."""

    issuer: str
    audience: tuple[str, ...]


@dataclass(frozen=True)
class AppConfig:
    """Everything the stacks may know about their environment; no stack reads context or env itself."""

    catalog: Catalog
    stage: str = "dev"
    account: str | None = None
    region: str | None = None
    source_root: Path = ROOT
    packages_dir: Path = PACKAGES_DIR
    jwt: JwtSettings | None = None
    cors_origins: tuple[str, ...] = ()
    alarm_email: str | None = None  # subscribed to the alarm topic when set
    reserve_concurrency: bool = True
    gpu_endpoints: bool = True
    termination_protection: bool = True
    tags: dict[str, str] = field(default_factory=dict)
    lambda_memory_mb: dict[str, int] = field(default_factory=dict)  # `make bench` placement, when opted in
    lock: VersionLock = field(default_factory=VersionLock)  # the approved version of each model (models.lock.json)

    def memory_mb(self, entry: ModelEntry) -> int:
        """The API function's memory: the bench's measured recommendation if applied, else the catalog's."""
        return self.lambda_memory_mb.get(entry.name, entry.lambda_.memory_mb)

    def __post_init__(self) -> None:
        # The image build context is source_root: a package outside it could never be baked into an image.
        if not self.packages_dir.resolve().is_relative_to(self.source_root.resolve()):
            raise ValueError(f"packages_dir {self.packages_dir} must lie inside the build context {self.source_root}")

    @property
    def metrics_namespace(self) -> str:
        return f"ModelServing/{self.stage}"

    @property
    def stack_prefix(self) -> str:
        """Every stack's name starts with it, and so does every generated alarm name (the alarm topic trusts it)."""
        return f"ModelServing-{self.stage}"

    def function_settings(
        self, entry: ModelEntry, timeout_s: int, endpoint_name: str | None = None, **batch: Any
    ) -> Settings:
        """What one model's function reads from its environment (`to_environment` writes it): the catalog's limits,
        its own timeout (endpoint calls are sized to end before it), the image's package folder, the GPU endpoint and
        its Triton batch limit when the model runs there, and the batch wiring for a scorer.

        Only API functions capture data: their log group is the one the capture path subscribes to."""
        monitoring, api = entry.monitoring, not batch
        return Settings(
            models_dir=Path(IMAGE_MODELS_DIR),
            sagemaker_endpoints={entry.name: endpoint_name} if endpoint_name else {},
            sagemaker_max_batch={entry.name: entry.sagemaker.max_batch_size} if endpoint_name else {},
            max_instances={entry.name: entry.max_instances},
            function_timeout_s=timeout_s,
            service_name=SERVICE_NAME,
            metrics_namespace=self.metrics_namespace,
            capture_rates={entry.name: monitoring.capture_rate} if api else {},
            capture_inputs=[entry.name] if api and monitoring.capture_inputs else [],
            **batch,
        )

    def package_dir(self, name: str) -> Path:
        """The approved version's package: `<packages_dir>/<name>/<locked version>/` (or a folder that is a package)."""
        return locked_package_dir(self.packages_dir, name, self.lock)

    def version(self, name: str) -> str:
        """The approved version that ships (the deploy gate has checked the package is that version)."""
        return self.lock.models[name].version

    def package_context_path(self, name: str) -> str:
        """The package folder relative to the image build context, as the Dockerfile's COPY sees it."""
        return self.package_dir(name).resolve().relative_to(self.source_root.resolve()).as_posix()

    @property
    def lambda_models(self) -> list[ModelEntry]:
        return self.catalog.on(Target.LAMBDA)

    @property
    def sagemaker_models(self) -> list[ModelEntry]:
        return self.catalog.on(Target.SAGEMAKER) if self.gpu_endpoints else []

    @property
    def served_models(self) -> list[ModelEntry]:
        """Models with an API front function: every Lambda model and every model behind a GPU endpoint."""
        return [*self.lambda_models, *self.sagemaker_models]


def pascal(name: str) -> str:
    """A model name as a construct id: `sentiment` -> `Sentiment` (ids stay stable when a model is added)."""
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))


def read_bench_placement(path: Path, catalog: Catalog) -> dict[str, int]:
    """Lambda memory per model from `make bench`'s placement.json, for models the catalog places on Lambda.

    A model the bench would move between Lambda and the GPU endpoint is left alone: `target` stays a catalog decision.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"bench placement {path}: {error}; run `make bench` or drop -c benchPlacement") from None
    memory: dict[str, int] = {}
    for name, placement in document.get("models", {}).items():
        entry = catalog.models.get(name)
        if entry is None or entry.target is not Target.LAMBDA or placement.get("recommended_target") != "lambda":
            continue
        memory[name] = int(placement["lambda_memory_mb"])
    return memory
