"""The function's environment, parsed once into one typed object (names are constants, defaults live here)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from functions.runtime.errors import describe_validation_error

MODELS_DIR = "MODELS_DIR"
SAGEMAKER_ENDPOINTS = "SAGEMAKER_ENDPOINTS"
MAX_INSTANCES = "MAX_INSTANCES"
ORT_THREADS = "ORT_THREADS"
BATCH_BUCKET = "BATCH_BUCKET"
BATCH_INPUT_PREFIX = "BATCH_INPUT_PREFIX"
BATCH_OUTPUT_PREFIX = "BATCH_OUTPUT_PREFIX"
BATCH_ROWS_PER_INFERENCE = "BATCH_ROWS_PER_INFERENCE"
MAX_BODY_BYTES = "MAX_BODY_BYTES"
METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"

DEFAULT_MODELS_DIR = Path("/var/task/models")
DEFAULT_MAX_INSTANCES = 64
LAMBDA_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024  # synchronous invocation payload limit


class SettingsError(ValueError):
    """An environment variable that cannot be used; the message names it."""


class Settings(BaseModel):
    """Everything a handler reads from its environment."""

    model_config = ConfigDict(frozen=True)

    models_dir: Path = DEFAULT_MODELS_DIR
    sagemaker_endpoints: dict[str, str] = Field(default_factory=dict)
    max_instances: dict[str, Annotated[int, Field(ge=1)]] | Annotated[int, Field(ge=1)] = DEFAULT_MAX_INSTANCES
    ort_threads: Annotated[int, Field(ge=1)] | None = None
    batch_bucket: str | None = None
    batch_input_prefix: str = "batch/input/"
    batch_output_prefix: str = "batch/output/"
    batch_rows_per_inference: Annotated[int, Field(ge=1, le=4096)] = 64
    max_body_bytes: Annotated[int, Field(ge=1)] = LAMBDA_PAYLOAD_LIMIT_BYTES
    metrics_namespace: str = "ModelServing"

    @field_validator("batch_input_prefix", "batch_output_prefix")
    @classmethod
    def _ends_with_slash(cls, prefix: str) -> str:
        return prefix if prefix.endswith("/") else f"{prefix}/"

    def max_instances_for(self, model: str) -> int:
        """The per-request instance limit of one model (MAX_INSTANCES is an int for all, or a JSON map)."""
        if isinstance(self.max_instances, int):
            return self.max_instances
        return self.max_instances.get(model, DEFAULT_MAX_INSTANCES)

    @property
    def intra_op_threads(self) -> int:
        """ORT_THREADS, else the CPUs this process may run on (not the host's count: Lambda pins vCPUs)."""
        return self.ort_threads or len(os.sched_getaffinity(0))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        raw: dict[str, object] = {}
        plain = {
            MODELS_DIR: "models_dir",
            ORT_THREADS: "ort_threads",
            BATCH_BUCKET: "batch_bucket",
            BATCH_INPUT_PREFIX: "batch_input_prefix",
            BATCH_OUTPUT_PREFIX: "batch_output_prefix",
            BATCH_ROWS_PER_INFERENCE: "batch_rows_per_inference",
            MAX_BODY_BYTES: "max_body_bytes",
            METRICS_NAMESPACE: "metrics_namespace",
        }
        for variable, field in plain.items():
            if env.get(variable):
                raw[field] = env[variable]
        for variable, field in ((SAGEMAKER_ENDPOINTS, "sagemaker_endpoints"), (MAX_INSTANCES, "max_instances")):
            if env.get(variable):
                try:
                    raw[field] = json.loads(env[variable])
                except json.JSONDecodeError:
                    raise SettingsError(f"{variable} must be JSON, got {env[variable]!r}") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            raise SettingsError(f"invalid serving environment: {describe_validation_error(error)}") from None
