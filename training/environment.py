"""The SageMaker training-toolkit contract (`SM_*`, `/opt/ml/...`, torchrun's ranks), read once into typed objects.

Every path can be overridden by an environment variable, which is how local mode runs the same entry point:
`SM_INPUT_CONFIG_DIR` (hyperparameters.json), `SM_CHANNEL_TRAIN|VALIDATION|TEST`, `SM_MODEL_DIR`,
`SM_OUTPUT_DATA_DIR` and `SM_CHECKPOINT_DIR` (ours: SageMaker itself always syncs `/opt/ml/checkpoints`).
Two more are ours: `LOG_LEVEL` (DEBUG brings back the libraries' chatter) and `TRAINING_PROGRESS` (`bar` or
`lines`; by default a bar when stderr is a terminal), which local mode sets when the driver's output is one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType

from catalog import Hyperparameter

CHANNELS = ("train", "validation", "test")
DEFAULT_INPUT_CONFIG_DIR = Path("/opt/ml/input/config")
DEFAULT_CHANNELS_DIR = Path("/opt/ml/input/data")
DEFAULT_MODEL_DIR = Path("/opt/ml/model")
DEFAULT_OUTPUT_DATA_DIR = Path("/opt/ml/output/data")
DEFAULT_CHECKPOINT_DIR = Path("/opt/ml/checkpoints")
LOG_LEVEL_VARIABLE = "LOG_LEVEL"
PROGRESS_VARIABLE = "TRAINING_PROGRESS"
PROGRESS_BAR, PROGRESS_LINES = "bar", "lines"

# Hyperparameters that describe the job rather than the training run (JobRequest.hyperparameters, training/jobs/).
JOB_KEYS = ("model_name", "profile", "job_name")


class ContractError(ValueError):
    """The job's environment or hyperparameters cannot be used; the message names the key."""


@dataclass(frozen=True)
class Hyperparameters:
    """The training keys every task understands; the catalog's values arrive here through hyperparameters.json."""

    epochs: int = 1
    max_steps: int = 0  # 0: no cap, train `epochs` full epochs
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128
    seed: int = 0
    max_train_samples: int = 0  # 0: all
    max_eval_samples: int = 0  # 0: all
    checkpoint_every: int = 50
    log_every: int = 10

    @classmethod
    def from_mapping(cls, values: Mapping[str, Hyperparameter]) -> Hyperparameters:
        """Coerce the known keys; an unknown key fails loudly (a typo must not silently train with a default).

        `sagemaker_*` keys (added by the SageMaker SDK) and the job keys are not training settings and are skipped.
        """
        known = {field.name: field for field in fields(cls)}
        parsed: dict[str, int | float] = {}
        for key, value in values.items():
            if key in JOB_KEYS or key.startswith("sagemaker_"):
                continue
            if key not in known:
                raise ContractError(f"hyperparameter {key!r} is unknown (known: {', '.join(known)})")
            kind = int if known[key].type == "int" else float
            try:
                number = kind(value)
            except (TypeError, ValueError):
                raise ContractError(f"hyperparameter {key!r}: expected {kind.__name__}, got {value!r}") from None
            if kind is int and number != float(value):
                raise ContractError(f"hyperparameter {key!r}: expected an integer, got {value!r}")
            parsed[key] = number
        return cls(**parsed)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TrainingEnvironment:
    hyperparameters: Mapping[str, Hyperparameter]
    channels: Mapping[str, Path]  # train / validation / test folders that exist
    model_dir: Path
    output_data_dir: Path
    checkpoint_dir: Path
    current_host: str
    num_gpus: int
    rank: int
    local_rank: int
    world_size: int
    log_level: str = "INFO"
    progress_bar: bool = False  # a tqdm bar instead of a metric line every log_every steps

    @property
    def model_name(self) -> str:
        """Which catalog entry this job trains."""
        name = self.hyperparameters.get("model_name")
        if not isinstance(name, str) or not name:
            raise ContractError("hyperparameter 'model_name' is required (the catalog model this job trains)")
        return name

    @property
    def profile(self) -> str:
        return str(self.hyperparameters.get("profile", "full"))

    @property
    def job_name(self) -> str:
        return str(self.hyperparameters.get("job_name", self.hyperparameters.get("sagemaker_job_name", "local")))

    @property
    def is_main_process(self) -> bool:
        """Only rank 0 logs, checkpoints and writes outputs."""
        return self.rank == 0

    @property
    def training(self) -> Hyperparameters:
        return Hyperparameters.from_mapping(self.hyperparameters)


def decode_hyperparameters(raw: Mapping[str, object]) -> dict[str, Hyperparameter]:
    """SageMaker stores every value as a string, JSON-encoded by the SDK (`"3"`, `"\\"demo\\""`) or raw from boto3."""
    decoded: dict[str, Hyperparameter] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):  # a raw string from boto3 stays a string
                value = json.loads(value)
        if not isinstance(value, int | float | str | bool):
            raise ContractError(f"hyperparameter {key!r}: expected a scalar, got {value!r}")
        decoded[key] = value
    return decoded


def read_hyperparameters(environ: Mapping[str, str]) -> dict[str, Hyperparameter]:
    """`SM_HPS` (JSON, set by the toolkit) wins; otherwise `<SM_INPUT_CONFIG_DIR>/hyperparameters.json`."""
    if environ.get("SM_HPS"):
        source = environ["SM_HPS"]
        origin = "SM_HPS"
    else:
        path = Path(environ.get("SM_INPUT_CONFIG_DIR", DEFAULT_INPUT_CONFIG_DIR)) / "hyperparameters.json"
        if not path.is_file():
            return {}
        source, origin = path.read_text(encoding="utf-8"), str(path)
    try:
        raw = json.loads(source)
    except json.JSONDecodeError as error:
        raise ContractError(f"{origin} is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ContractError(f"{origin} must hold a JSON object")
    return decode_hyperparameters(raw)


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ContractError(f"environment variable {name} must be an integer, got {value!r}") from None


def read_environment(environ: Mapping[str, str] | None = None) -> TrainingEnvironment:
    """Read the whole contract once; pass `environ` in tests instead of patching `os.environ`."""
    env = os.environ if environ is None else environ
    channels = {name: Path(env.get(f"SM_CHANNEL_{name.upper()}", DEFAULT_CHANNELS_DIR / name)) for name in CHANNELS}
    return TrainingEnvironment(
        hyperparameters=MappingProxyType(read_hyperparameters(env)),
        channels=MappingProxyType({name: path for name, path in channels.items() if path.is_dir()}),
        model_dir=Path(env.get("SM_MODEL_DIR", DEFAULT_MODEL_DIR)),
        output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR", DEFAULT_OUTPUT_DATA_DIR)),
        checkpoint_dir=Path(env.get("SM_CHECKPOINT_DIR", DEFAULT_CHECKPOINT_DIR)),
        current_host=env.get("SM_CURRENT_HOST", "algo-1"),
        num_gpus=_int(env, "SM_NUM_GPUS", 0),
        rank=_int(env, "RANK", 0),
        local_rank=_int(env, "LOCAL_RANK", 0),
        world_size=_int(env, "WORLD_SIZE", 1),
        log_level=env.get(LOG_LEVEL_VARIABLE, "") or "INFO",
        progress_bar=_progress_bar(env),
    )


def _progress_bar(environ: Mapping[str, str]) -> bool:
    progress = environ.get(PROGRESS_VARIABLE, "")
    if progress not in ("", PROGRESS_BAR, PROGRESS_LINES):
        raise ContractError(f"environment variable {PROGRESS_VARIABLE} must be {PROGRESS_BAR!r} or {PROGRESS_LINES!r}")
    return progress == PROGRESS_BAR or (not progress and sys.stderr.isatty())
