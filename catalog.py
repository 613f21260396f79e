"""The typed loader for `models.toml`: training, the local stack and the CDK app read the catalog only through here."""

from __future__ import annotations

import tomllib
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from functions.runtime.errors import describe_validation_error
from functions.runtime.task_registry import TASKS, Task

ROOT = Path(__file__).resolve().parent
CATALOG_PATH = ROOT / "models.toml"
PACKAGES_DIR = ROOT / "build" / "models"

Hyperparameter = int | float | str | bool


class Target(StrEnum):
    LAMBDA = "lambda"
    SAGEMAKER = "sagemaker"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Platform(_Strict):
    """Bucket layout and batch wiring: one source for the CDK stacks and the local stack."""

    models_prefix: str = "models/"
    datasets_prefix: str = "datasets/"
    batch_input_prefix: str = "batch/input/"
    batch_output_prefix: str = "batch/output/"
    batch_output_expiry_days: Annotated[int, Field(ge=1)] = 30
    batch_function_timeout_s: Annotated[int, Field(ge=1, le=900)] = 300
    batch_function_memory_mb: Annotated[int, Field(ge=128, le=10240)] = 3008
    batch_rows_per_inference: Annotated[int, Field(ge=1, le=4096)] = 64
    batch_shard_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    batch_max_concurrency: Annotated[int, Field(ge=2, le=1000)] = 10
    queue_batch_size: Annotated[int, Field(ge=1, le=10)] = 1
    queue_max_receive_count: Annotated[int, Field(ge=5)] = 5
    api_function_timeout_s: Annotated[int, Field(ge=1, lt=30)] = 25
    api_throttle_rate: Annotated[int, Field(ge=1)] = 100
    api_throttle_burst: Annotated[int, Field(ge=1)] = 200
    log_retention_days: Annotated[int, Field(ge=1)] = 30
    capture_prefix: str = "monitoring/capture/"  # data capture records land under <prefix><model>/<yyyy-mm-dd>/

    @property
    def queue_visibility_timeout_s(self) -> int:
        """Lambda's guidance for SQS sources: at least six times the function timeout."""
        return 6 * self.batch_function_timeout_s

    @model_validator(mode="after")
    def _output_outside_input(self) -> Platform:
        if self.batch_output_prefix.startswith(self.batch_input_prefix):
            raise ValueError("batch_output_prefix must not be under batch_input_prefix (it would re-trigger the batch)")
        if self.capture_prefix.startswith(self.batch_input_prefix):
            raise ValueError("capture_prefix must not be under batch_input_prefix (captured records would be scored)")
        return self


class LambdaPlacement(_Strict):
    memory_mb: Annotated[int, Field(ge=128, le=10240)] = 2048
    architecture: Literal["x86_64", "arm64"] = "x86_64"
    p95_budget_ms: Annotated[float, Field(gt=0)] = 100.0


class SageMakerPlacement(_Strict):
    instance_type: Annotated[str, Field(pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")] = "ml.g5.xlarge"
    initial_instance_count: Annotated[int, Field(ge=1)] = 1
    max_instance_count: Annotated[int, Field(ge=1)] = 2
    invocations_per_instance: Annotated[int, Field(ge=1)] = 1000
    max_batch_size: Annotated[int, Field(ge=1)] = 64
    tensorrt: bool = False


class TrainingPlacement(_Strict):
    instance_type: Annotated[str, Field(pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")] = "ml.g5.xlarge"
    instance_count: Annotated[int, Field(ge=1)] = 1
    use_spot: bool = False
    max_run_s: Annotated[int, Field(ge=60)] = 4 * 3600


class Canary(_Strict):
    """How a new version takes traffic: this share first, for this long, before the rest (CodeDeploy for the
    functions, SageMaker deployment guardrails for the endpoint); an alarm in that time rolls it back."""

    percent: Annotated[int, Field(ge=1, le=50)] = 10
    minutes: Annotated[int, Field(ge=1, le=60)] = 5


class PromotionPolicy(_Strict):
    """What `python -m registry promote` compares: the manifest metric that decides, and how much worse it may be."""

    primary_metric: str | None = "test_accuracy"  # a key of the manifest's metrics; None: no quality comparison
    tolerance_points: Annotated[float, Field(ge=0)] = 0.5  # percentage points of the metric (0.5 = 0.005)


class MonitoringPolicy(_Strict):
    """Data capture and drift: what share of requests is recorded, whether raw inputs are, and when PSI is drift."""

    capture_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    capture_inputs: bool = False  # raw inputs (texts, pixels) in the records: opt in only where that is allowed
    drift_threshold: Annotated[float, Field(gt=0.0)] = 0.2  # PSI above it is drift (0.1-0.2 moderate, > 0.2 major)


class ModelEntry(_Strict):
    name: str
    task: Task
    source: Annotated[str, Field(pattern=r"^(pretrained|architecture):.+$")]
    dataset: str
    target: Target
    max_instances: Annotated[int, Field(ge=1, le=4096)] = 64
    labels: tuple[str, ...] = ()
    hyperparameters: dict[str, Hyperparameter] = Field(default_factory=dict)
    demo_hyperparameters: dict[str, Hyperparameter] = Field(default_factory=dict)
    lambda_: LambdaPlacement = Field(default_factory=LambdaPlacement, alias="lambda")
    sagemaker: SageMakerPlacement = Field(default_factory=SageMakerPlacement)
    training: TrainingPlacement = Field(default_factory=TrainingPlacement)
    canary: Canary = Field(default_factory=Canary)
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)
    monitoring: MonitoringPolicy = Field(default_factory=MonitoringPolicy)

    @model_validator(mode="after")
    def _labels_match_task(self) -> ModelEntry:
        classifies = TASKS[self.task].classifies
        if classifies and len(self.labels) < 2:
            raise ValueError(f"a {self.task} model needs at least two labels")
        if not classifies and self.labels:
            raise ValueError(f"a {self.task} model takes no labels")
        return self

    def hyperparameters_for(self, profile: Literal["full", "demo"]) -> dict[str, Hyperparameter]:
        """The catalog's hyperparameters, with the demo overrides on top for the CPU demo profile."""
        if profile == "demo":
            return {**self.hyperparameters, **self.demo_hyperparameters}
        return dict(self.hyperparameters)

    @property
    def package_dir(self) -> Path:
        """This model's folder of versions, `build/models/<name>/<version>/` (`registry.store` reads and writes it)."""
        return PACKAGES_DIR / self.name


class Catalog(_Strict):
    platform: Platform = Field(default_factory=Platform)
    models: dict[str, ModelEntry]

    def model(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            raise CatalogError(f"no model named {name!r} in the catalog (known: {', '.join(self.models)})") from None

    def on(self, target: Target) -> list[ModelEntry]:
        return [entry for entry in self.models.values() if entry.target is target]


class CatalogError(ValueError):
    """A catalog that cannot be used; the message names the model and the field."""


def parse_catalog(document: dict) -> Catalog:
    """Validate a parsed TOML document, naming the model and field of the first problems found."""
    models = document.get("models")
    if not isinstance(models, dict) or not models:
        raise CatalogError("the catalog needs at least one [models.<name>] table")
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise CatalogError(f"model {name!r}: expected a table, got {type(entry).__name__}")
        try:
            ModelEntry.model_validate({**entry, "name": name})
        except ValidationError as error:
            raise CatalogError(f"model {name!r}: {describe_validation_error(error)}") from None
    try:
        return Catalog.model_validate(
            {**document, "models": {name: {**entry, "name": name} for name, entry in models.items()}}
        )
    except ValidationError as error:
        raise CatalogError(f"catalog: {describe_validation_error(error)}") from None


@cache
def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    """Read and validate the catalog file once per process."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(f"{path.name} is not valid TOML: {error}") from None
    return parse_catalog(document)
