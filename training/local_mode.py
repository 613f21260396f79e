"""Local mode: run the SageMaker entry point on this machine inside a SageMaker-shaped directory tree.

What runs here is what runs on SageMaker: the same `python -m training.train`, reading the same files and `SM_*`
variables the SageMaker training toolkit provides, only rooted in a work folder instead of `/opt/ml`.
"""

from __future__ import annotations

import codecs
import fcntl
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from catalog import ROOT, ModelEntry

Profile = Literal["full", "demo"]
ENTRY_MODULE = "training.train"
HOST = "algo-1"
# Local mode reads the offline model and data packages, never the network (the SageMaker job sets the same).
OFFLINE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
# The job tail shown when a job fails: enough to see a traceback, not the whole log.
FAILURE_TAIL_CHARS = 6000


class TrainingJobError(RuntimeError):
    """A training job that exited non-zero or left no package; the message carries the job's last output."""


def job_name_for(entry: ModelEntry, profile: str, now: datetime | None = None) -> str:
    """A SageMaker-valid job name (63 chars, alphanumerics and hyphens) that sorts by time."""
    suffix = f"-{profile}-{(now or datetime.now(UTC)):%Y%m%d-%H%M%S}"
    return entry.name[: 63 - len(suffix)] + suffix


def job_hyperparameters(
    entry: ModelEntry, profile: Profile, overrides: Mapping[str, Any] | None, job_name: str
) -> dict[str, Any]:
    """The job's own hyperparameters: the catalog's for the profile, the overrides, and who the job is."""
    return {
        **entry.hyperparameters_for(profile),
        **(overrides or {}),
        "model_name": entry.name,
        "profile": profile,
        "job_name": job_name,
    }


def encode_hyperparameters(hyperparameters: Mapping[str, Any]) -> dict[str, str]:
    """SageMaker's wire shape: every value JSON-encoded into a string (3 -> "3", "x" -> '"x"', True -> "true")."""
    return {str(key): json.dumps(value) for key, value in hyperparameters.items()}


def decode_hyperparameters(encoded: Mapping[str, str]) -> dict[str, Any]:
    """What the training toolkit puts in SM_HPS: the values decoded, SageMaker's own `sagemaker_*` keys left out."""
    decoded: dict[str, Any] = {}
    for key, value in encoded.items():
        if key.startswith("sagemaker_"):
            continue
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:
            decoded[key] = value  # the toolkit keeps a value that is not JSON as the raw string
    return decoded


def write_job_tree(
    work_dir: Path, *, job_name: str, hyperparameters: Mapping[str, Any], channels: Mapping[str, Path], processes: int
) -> dict[str, str]:
    """Lay out `/opt/ml` under work_dir and return the `SM_*` environment pointing into it.

    input/, model/ and output/ start empty each run; checkpoints/ is kept so a killed job resumes.
    """
    for transient in ("input", "model", "output"):
        shutil.rmtree(work_dir / transient, ignore_errors=True)
    config_dir = work_dir / "input" / "config"
    data_dir = work_dir / "input" / "data"
    model_dir = work_dir / "model"
    output_dir = work_dir / "output"
    output_data_dir = output_dir / "data"
    checkpoint_dir = work_dir / "checkpoints"
    for folder in (config_dir, data_dir, model_dir, output_data_dir, checkpoint_dir):
        folder.mkdir(parents=True, exist_ok=True)

    encoded = {
        **encode_hyperparameters(hyperparameters),
        # What the SageMaker Python SDK adds in script mode; the toolkit strips `sagemaker_*` before the job sees them.
        "sagemaker_program": json.dumps("train.py"),
        "sagemaker_submit_directory": json.dumps(ROOT.as_uri()),
        "sagemaker_region": json.dumps(os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "local"))),
        "sagemaker_job_name": json.dumps(job_name),
        "sagemaker_container_log_level": json.dumps(20),
    }
    resource_config = {
        "current_host": HOST,
        "current_instance_type": "local",
        "current_group_name": "homogeneousCluster",
        "hosts": [HOST],
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": [HOST]}],
        "network_interface_name": "lo",
    }
    input_data_config = {
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name in channels
    }
    (config_dir / "hyperparameters.json").write_text(json.dumps(encoded, indent=2))
    (config_dir / "resourceconfig.json").write_text(json.dumps(resource_config, indent=2))
    (config_dir / "inputdataconfig.json").write_text(json.dumps(input_data_config, indent=2))

    channel_env: dict[str, str] = {}
    for name, source in channels.items():
        target = data_dir / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / source.name)
        channel_env[f"SM_CHANNEL_{name.upper()}"] = str(target)

    hps = decode_hyperparameters(encoded)
    return {
        "SM_INPUT_DIR": str(work_dir / "input"),
        "SM_INPUT_CONFIG_DIR": str(config_dir),
        "SM_MODEL_DIR": str(model_dir),
        "SM_OUTPUT_DIR": str(output_dir),
        "SM_OUTPUT_DATA_DIR": str(output_data_dir),
        "SM_CHECKPOINT_DIR": str(checkpoint_dir),
        "SM_CHANNELS": json.dumps(sorted(channels)),
        **channel_env,
        "SM_HPS": json.dumps(hps),
        **{
            f"SM_HP_{key.upper()}": value if isinstance(value, str) else json.dumps(value) for key, value in hps.items()
        },
        "SM_CURRENT_HOST": HOST,
        "SM_HOSTS": json.dumps([HOST]),
        "SM_NUM_GPUS": "0",
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "SM_RESOURCE_CONFIG": json.dumps(resource_config),
        "SM_INPUT_DATA_CONFIG": json.dumps(input_data_config),
        "SM_TRAINING_ENV": json.dumps({"job_name": job_name, "hyperparameters": hps, "num_processes": processes}),
    }


def entry_point_command(processes: int) -> list[str]:
    """The entry point, or the same module under torchrun (what SageMaker's torch_distributed launches)."""
    if processes > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        return [sys.executable, *launcher, "-m", ENTRY_MODULE]
    return [sys.executable, "-m", ENTRY_MODULE]


def run_entry_point(command: list[str], env: Mapping[str, str], *, stream: TextIO | None = None) -> None:
    """Run the job, streaming its output as it comes (progress bars included), and fail with its tail."""
    out = stream or sys.stdout
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may straddle two reads
    tail = bytearray()
    with subprocess.Popen(command, cwd=ROOT, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as job:
        assert job.stdout is not None
        while chunk := os.read(job.stdout.fileno(), 8192):
            out.write(decoder.decode(chunk))
            out.flush()
            tail = (tail + chunk)[-FAILURE_TAIL_CHARS:]
        returncode = job.wait()
    if returncode != 0:
        raise TrainingJobError(
            f"training job {' '.join(command[1:])} exited with {returncode}; last output:\n"
            + tail.decode("utf-8", errors="replace")
        )


def publish_package(model_dir: Path, package_dir: Path) -> Path:
    """Copy the job's model/ folder to package_dir so readers see the old package or the new one, never half."""
    if not (model_dir / "manifest.json").is_file():
        raise TrainingJobError(f"the training job finished but left no manifest.json in {model_dir}")
    package_dir.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = package_dir.with_name(f".{package_dir.name}.new-{token}")
    retired = package_dir.with_name(f".{package_dir.name}.old-{token}")
    shutil.copytree(model_dir, staging)
    if package_dir.exists():
        package_dir.rename(retired)
    staging.rename(package_dir)
    shutil.rmtree(retired, ignore_errors=True)
    return package_dir


@contextmanager
def exclusive(work_dir: Path) -> Iterator[None]:
    """One job per work folder: a second run would wipe the tree under the first (the machine is shared)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with (work_dir / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingJobError(f"another training job is running in {work_dir}") from None
        yield  # the lock goes with the file descriptor, also when this process dies


def train_local(
    entry: ModelEntry,
    *,
    profile: Profile,
    overrides: dict[str, Any] | None = None,
    work_dir: Path,
    package_dir: Path | None = None,
    processes: int = 1,
    job_name: str | None = None,
    stream: TextIO | None = None,
) -> Path:
    """Train one catalog model in local mode and leave its package in package_dir (default entry.package_dir)."""
    from training.datasets import prepare_channels  # the task's data code: imported when a job is prepared

    work_dir = Path(work_dir).resolve()
    job_name = job_name or job_name_for(entry, profile)
    with exclusive(work_dir):
        staged = work_dir / "prepared"
        shutil.rmtree(staged, ignore_errors=True)
        channels = prepare_channels(entry, staged)
        sm_env = write_job_tree(
            work_dir,
            job_name=job_name,
            hyperparameters=job_hyperparameters(entry, profile, overrides, job_name),
            channels=channels,
            processes=processes,
        )
        env = {**os.environ, **sm_env, "PYTHONUNBUFFERED": "1"}
        for key, value in OFFLINE_ENVIRONMENT.items():
            env.setdefault(key, value)
        run_entry_point(entry_point_command(processes), env, stream=stream)
        return publish_package(work_dir / "model", Path(package_dir) if package_dir else entry.package_dir)
