"""The function's environment contract, in both directions: `from_env` in the Lambda sandbox, `to_environment` for
the stacks, the local stack and the bench. No variable name is typed anywhere else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from functions.runtime.errors import describe_validation_error

DEFAULT_MODELS_DIR = Path("/var/task/models")
DEFAULT_MAX_INSTANCES = 64
LAMBDA_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024  # synchronous invocation payload limit, each way
DEFAULT_FUNCTION_TIMEOUT_S = 25.0  # the API function's (below the HTTP API's 30 s integration limit)

# field -> environment variable; the JSON ones carry maps
VARIABLES: dict[str, str] = {
    "models_dir": "MODELS_DIR",
    "versions_dir": "MODEL_VERSIONS_DIR",
    "version_cache_size": "MODEL_VERSION_CACHE_SIZE",
    "sagemaker_endpoints": "SAGEMAKER_ENDPOINTS",
    "sagemaker_max_batch": "SAGEMAKER_MAX_BATCH",
    "max_instances": "MAX_INSTANCES",
    "ort_threads": "ORT_THREADS",
    "batch_bucket": "BATCH_BUCKET",
    "batch_input_prefix": "BATCH_INPUT_PREFIX",
    "batch_output_prefix": "BATCH_OUTPUT_PREFIX",
    "batch_rows_per_inference": "BATCH_ROWS_PER_INFERENCE",
    "batch_shard_bytes": "BATCH_SHARD_BYTES",
    "batch_queue_url": "BATCH_QUEUE_URL",
    "length_bucketing": "LENGTH_BUCKETING",
    "max_body_bytes": "MAX_BODY_BYTES",
    "max_response_bytes": "MAX_RESPONSE_BYTES",
    "function_timeout_s": "FUNCTION_TIMEOUT_S",
    "service_name": "POWERTOOLS_SERVICE_NAME",
    "metrics_namespace": "POWERTOOLS_METRICS_NAMESPACE",
    "metrics_enabled": "METRICS_ENABLED",
    "log_level": "POWERTOOLS_LOG_LEVEL",
    "capture_rates": "CAPTURE_RATES",
    "capture_inputs": "CAPTURE_INPUTS",
    "drift_thresholds": "DRIFT_THRESHOLDS",
    "drift_window_hours": "DRIFT_WINDOW_HOURS",
    "monitoring_bucket": "MONITORING_BUCKET",
    "capture_prefix": "CAPTURE_PREFIX",
}
JSON_FIELDS = frozenset(
    {"sagemaker_endpoints", "sagemaker_max_batch", "max_instances"}
    | {"capture_rates", "capture_inputs", "drift_thresholds"}
)
DEFAULT_DRIFT_THRESHOLD = 0.2


class SettingsError(ValueError):
    """An environment variable that cannot be used; the message names it."""


class Settings(BaseModel):
    """Everything a handler reads from its environment."""

    model_config = ConfigDict(frozen=True)

    models_dir: Path = DEFAULT_MODELS_DIR
    # other registered versions, `<name>/<version>/` packages loaded on demand (the local stack's build/models)
    versions_dir: Path | None = None
    version_cache_size: Annotated[int, Field(ge=1, le=16)] = 2  # versions besides the served ones held in memory
    sagemaker_endpoints: dict[str, str] = Field(default_factory=dict)
    # model -> the endpoint's Triton max_batch_size ([models.<name>.sagemaker] max_batch_size): requests are chunked
    sagemaker_max_batch: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    max_instances: dict[str, Annotated[int, Field(ge=1)]] | Annotated[int, Field(ge=1)] = DEFAULT_MAX_INSTANCES
    ort_threads: Annotated[int, Field(ge=1)] | None = None
    batch_bucket: str | None = None
    batch_input_prefix: str = "batch/input/"
    batch_output_prefix: str = "batch/output/"
    batch_rows_per_inference: Annotated[int, Field(ge=1, le=4096)] = 64
    # a file larger than one shard fans out: shard messages go to the function's own queue (both unset: never)
    batch_shard_bytes: Annotated[int, Field(ge=1)] | None = None
    batch_queue_url: str | None = None
    length_bucketing: bool = True  # texts run in sub-batches sorted by token length (off: one padded batch)
    max_body_bytes: Annotated[int, Field(ge=1)] = LAMBDA_PAYLOAD_LIMIT_BYTES
    max_response_bytes: Annotated[int, Field(ge=1)] = LAMBDA_PAYLOAD_LIMIT_BYTES
    # the function's own timeout: endpoint calls (timeouts x attempts) are sized to end before it
    function_timeout_s: Annotated[float, Field(ge=1, le=900)] = DEFAULT_FUNCTION_TIMEOUT_S  # Lambda's range
    service_name: str = "model-serving"
    metrics_namespace: str = "ModelServing"
    metrics_enabled: bool = True  # off: EMF documents go to the debug log instead of stdout (the local stack)
    log_level: str | None = None  # None: Powertools' default (INFO, or LOG_LEVEL / AWS_LAMBDA_LOG_LEVEL)
    # data capture ([models.<name>.monitoring]): model -> share of requests recorded (absent: none), and the models
    # whose records may carry the raw input
    capture_rates: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(default_factory=dict)
    capture_inputs: list[str] = Field(default_factory=list)
    # the drift check: model -> PSI threshold, how far back it looks, and where the capture records are
    drift_thresholds: dict[str, Annotated[float, Field(gt=0.0)]] = Field(default_factory=dict)
    drift_window_hours: Annotated[int, Field(ge=1)] = 24
    monitoring_bucket: str | None = None
    capture_prefix: str = "monitoring/capture/"

    @field_validator("batch_input_prefix", "batch_output_prefix", "capture_prefix")
    @classmethod
    def _ends_with_slash(cls, prefix: str) -> str:
        return prefix if prefix.endswith("/") else f"{prefix}/"

    def max_instances_for(self, model: str) -> int:
        """The per-request instance limit of one model (MAX_INSTANCES is an int for all, or a JSON map)."""
        if isinstance(self.max_instances, int):
            return self.max_instances
        return self.max_instances.get(model, DEFAULT_MAX_INSTANCES)

    def drift_threshold_for(self, model: str) -> float:
        return self.drift_thresholds.get(model, DEFAULT_DRIFT_THRESHOLD)

    @property
    def intra_op_threads(self) -> int:
        """ORT_THREADS, else the CPUs this process may run on (not the host's count: Lambda pins vCPUs)."""
        return self.ort_threads or len(os.sched_getaffinity(0))

    def to_environment(self) -> dict[str, str]:
        """The variables that reproduce these settings in a function's environment (None fields are left out)."""
        environment: dict[str, str] = {}
        for field, variable in VARIABLES.items():
            value = getattr(self, field)
            if value is None:
                continue
            if field in JSON_FIELDS:
                environment[variable] = json.dumps(value, separators=(",", ":"))
            elif isinstance(value, bool):
                environment[variable] = "true" if value else "false"
            else:
                environment[variable] = str(value)
        return environment

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        raw: dict[str, object] = {}
        for field, variable in VARIABLES.items():
            if not env.get(variable):
                continue
            if field in JSON_FIELDS:
                try:
                    raw[field] = json.loads(env[variable])
                except json.JSONDecodeError:
                    raise SettingsError(f"{variable} must be JSON, got {env[variable]!r}") from None
            else:
                raw[field] = env[variable]
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            raise SettingsError(f"invalid serving environment: {describe_validation_error(error)}") from None
