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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from catalog import ROOT
from training.environment import PROGRESS_BAR, PROGRESS_LINES, PROGRESS_VARIABLE, decode_hyperparameters
from training.jobs.request import (
    OFFLINE_ENVIRONMENT,
    JobRequest,
    TrainingJobError,
    encode_hyperparameters,
    publish_package,
)

ENTRY_MODULE = "training.train"
HOST = "algo-1"
# The job tail shown when a job fails: enough to see a traceback, not the whole log.
FAILURE_TAIL_CHARS = 6000


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

    # What the training toolkit puts in SM_HPS: the values decoded, SageMaker's own `sagemaker_*` keys left out.
    hps = {key: value for key, value in decode_hyperparameters(encoded).items() if not key.startswith("sagemaker_")}
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


def job_process_environment(request: JobRequest, sm_env: Mapping[str, str], out: TextIO) -> dict[str, str]:
    """This process's environment plus the job's: a progress bar when the job's output goes to a terminal."""
    env = {**OFFLINE_ENVIRONMENT, **os.environ, **sm_env, **request.log_environment, "PYTHONUNBUFFERED": "1"}
    if out.isatty():
        env.setdefault(PROGRESS_VARIABLE, PROGRESS_BAR)
        env.setdefault("COLUMNS", str(shutil.get_terminal_size().columns))  # the job's stderr is a pipe, not a tty
    else:
        env.setdefault(PROGRESS_VARIABLE, PROGRESS_LINES)
    if request.processes > 1:
        env.setdefault("OMP_NUM_THREADS", "1")  # what torchrun sets anyway, without its warning about it
    return env


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


def train_local(request: JobRequest, *, stream: TextIO | None = None) -> Path:
    """Train one catalog model in local mode and publish its package at request.package_dir."""
    out = stream or sys.stdout
    with exclusive(request.work_dir):
        sm_env = write_job_tree(
            request.work_dir,
            job_name=request.job_name,
            hyperparameters=request.hyperparameters,
            channels=request.prepare_channels(),
            processes=request.processes,
        )
        env = job_process_environment(request, sm_env, out)
        run_entry_point(entry_point_command(request.processes), env, stream=out)
        return publish_package(request.work_dir / "model", request.package_dir)
