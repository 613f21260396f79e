"""One training job as the driver sees it: what to train with which settings, the job's environment and channels,
and where its package lands."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from catalog import Hyperparameter, ModelEntry
from functions.runtime.package import MANIFEST_FILE
from training.environment import LOG_LEVEL_VARIABLE
from training.publish import staged_package

Profile = Literal["full", "demo"]
# Jobs read the offline model and data packages, never the network: in local mode and on SageMaker alike.
OFFLINE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
PREPARED_CHANNELS_DIR = "prepared"


class TrainingJobError(RuntimeError):
    """A training job that exited non-zero or left no package; the message carries the job's last output."""


def job_name_for(entry: ModelEntry, profile: str, now: datetime | None = None) -> str:
    """A SageMaker-valid job name (63 chars, alphanumerics and hyphens) that sorts by time."""
    suffix = f"-{profile}-{(now or datetime.now(UTC)):%Y%m%d-%H%M%S}"
    return entry.name[: 63 - len(suffix)] + suffix


@dataclass(frozen=True)
class JobRequest:
    """Everything both modes need to know of one job; build it with `JobRequest.create`."""

    entry: ModelEntry
    profile: Profile
    work_dir: Path  # the job's own folder: prepared channels, local mode's /opt/ml tree, checkpoints to resume
    package_dir: Path  # where the finished package is published (training.submit then files it as a version)
    job_name: str
    overrides: Mapping[str, Hyperparameter] = field(default_factory=lambda: MappingProxyType({}))
    processes: int = 1  # local mode: torchrun processes (DDP on gloo); SageMaker: the catalog's instances decide
    verbose: bool = False  # the job logs the libraries' chatter too (LOG_LEVEL=DEBUG)

    @classmethod
    def create(
        cls,
        entry: ModelEntry,
        *,
        work_dir: Path,
        profile: Profile = "demo",
        overrides: Mapping[str, Hyperparameter] | None = None,
        package_dir: Path | None = None,
        job_name: str | None = None,
        processes: int = 1,
        verbose: bool = False,
    ) -> JobRequest:
        """Defaults: the job's own `package/` folder, and a fresh time-stamped job name."""
        return cls(
            entry=entry,
            profile=profile,
            work_dir=Path(work_dir).resolve(),
            package_dir=Path(package_dir) if package_dir else Path(work_dir).resolve() / "package",
            job_name=job_name or job_name_for(entry, profile),
            overrides=MappingProxyType(dict(overrides or {})),
            processes=processes,
            verbose=verbose,
        )

    @property
    def hyperparameters(self) -> dict[str, Hyperparameter]:
        """The job's own hyperparameters: the catalog's for the profile, the overrides, and who the job is."""
        return {
            **self.entry.hyperparameters_for(self.profile),
            **self.overrides,
            "model_name": self.entry.name,
            "profile": self.profile,
            "job_name": self.job_name,
        }

    @property
    def log_environment(self) -> dict[str, str]:
        """How much the job logs: `--verbose` brings back the libraries' chatter."""
        return {LOG_LEVEL_VARIABLE: "DEBUG"} if self.verbose else {}

    @property
    def environment(self) -> dict[str, str]:
        """Variables the job runs with besides the SageMaker contract: offline, and how much it logs."""
        return {**OFFLINE_ENVIRONMENT, **self.log_environment}

    def prepare_channels(self) -> dict[str, Path]:
        """The catalog dataset as fresh train/validation/test folders under work_dir, whichever mode runs the job."""
        from training.datasets import prepare_channels  # the task's data code: imported when a job is prepared

        prepared = self.work_dir / PREPARED_CHANNELS_DIR
        shutil.rmtree(prepared, ignore_errors=True)
        return prepare_channels(self.entry, prepared)


def encode_hyperparameters(hyperparameters: Mapping[str, Any]) -> dict[str, str]:
    """SageMaker's wire shape: every value JSON-encoded into a string (3 -> "3", "x" -> '"x"', True -> "true")."""
    return {str(key): json.dumps(value) for key, value in hyperparameters.items()}


def publish_package(model_dir: Path, package_dir: Path) -> Path:
    """Copy a finished job's model folder to package_dir so readers see the old package or the new one, never half."""
    if not (model_dir / MANIFEST_FILE).is_file():
        raise TrainingJobError(f"the training job finished but left no {MANIFEST_FILE} in {model_dir}")
    with staged_package(package_dir) as staging:
        shutil.copytree(model_dir, staging, dirs_exist_ok=True)
    return package_dir
