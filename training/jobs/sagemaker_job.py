"""SageMaker mode: the same entry point as a real CreateTrainingJob on a GPU instance; its model.tar.gz is the package.

Only this module talks to AWS; it takes the boto3 clients as arguments so tests hand it moto's.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from catalog import ROOT, Platform
from training.job_logging import METRIC_DEFINITIONS
from training.jobs.request import JobRequest, TrainingJobError, encode_hyperparameters, publish_package

# AWS Deep Learning Container for PyTorch training. 2.5.1 is the newest line built for Python 3.11, the version this
# project pins; the job pip-installs training/requirements.txt on top, so the job runs our pinned torch.
PYTORCH_TRAINING_REPOSITORY = "pytorch-training"
PYTORCH_TRAINING_TAG = "2.5.1-gpu-py311-cu124-ubuntu22.04-sagemaker"
DLC_ACCOUNT = "763104351884"
# Regions whose DLC registry lives in another account (SageMaker Python SDK, image_uri_config/pytorch.json).
DLC_ACCOUNT_BY_REGION = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-northeast-3": "364406365360",
    "ap-south-2": "772153158452",
    "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322",
    "ca-west-1": "204538143572",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
    "eu-central-2": "380420809688",
    "eu-south-1": "692866216735",
    "eu-south-2": "503227376785",
    "il-central-1": "780543022126",
    "me-central-1": "914824155844",
    "me-south-1": "217643126080",
    "us-gov-east-1": "446045086412",
    "us-gov-west-1": "442386744353",
}
CONTAINER_CHECKPOINT_DIR = "/opt/ml/checkpoints"
SOURCE_TARBALL = "sourcedir.tar.gz"
# Script mode runs `python train.py` from the extracted tarball; this launcher runs the package's module instead,
# so `training.train` keeps its package imports, exactly as `python -m training.train` does in local mode.
LAUNCHER = b'''"""SageMaker script-mode launcher: runs the repository's entry point as a module."""
import runpy
import sys

sys.argv[1:] = []  # the toolkit passes hyperparameters as flags too; the job reads them from hyperparameters.json
runpy.run_module("training.train", run_name="__main__", alter_sys=True)
'''


@dataclass(frozen=True)
class SageMakerTarget:
    """Where a job runs on AWS: the execution role, the artifacts bucket and its layout, the training image."""

    role_arn: str
    bucket: str
    platform: Platform
    image_uri: str | None = None  # default: the region's PyTorch training DLC
    poll_s: int = 60
    volume_size_gb: int = 50


def training_image_uri(region: str, tag: str = PYTORCH_TRAINING_TAG) -> str:
    """The region's PyTorch GPU training image (another registry account in opt-in and partition regions)."""
    account = DLC_ACCOUNT_BY_REGION.get(region, DLC_ACCOUNT)
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/{PYTORCH_TRAINING_REPOSITORY}:{tag}"


# Outside training/, the job reads the catalog, writes through the package contract and profiles the package through
# the serving code for its drift reference (torch-free: numpy, pydantic, onnxruntime, tokenizers).
SHARED_SOURCES = ("catalog.py", "models.toml", "functions/__init__.py")
SHARED_TREES = ("functions/runtime", "functions/monitoring")


def _tree(folder: str) -> list[Path]:
    return [
        path
        for path in sorted((ROOT / folder).rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]


def _source_files() -> list[tuple[Path, str]]:
    files = [path for folder in ("training", *SHARED_TREES) for path in _tree(folder)]
    return [*((path, path.relative_to(ROOT).as_posix()) for path in files), *((ROOT / n, n) for n in SHARED_SOURCES)]


def _container_requirements() -> bytes:
    """training/requirements.txt, plus pydantic for the catalog and the package contract when it is not pinned."""
    text = (ROOT / "training" / "requirements.txt").read_text()
    if not any(line.strip().lower().startswith("pydantic") for line in text.splitlines()):
        from importlib.metadata import version

        text = text.rstrip("\n") + f"\npydantic=={version('pydantic')}\n"
    return text.encode()


def build_source_tarball(destination: Path) -> Path:
    """The code the entry point needs, with requirements.txt at the root so the container pip-installs it.

    Byte-for-byte reproducible (sorted, zeroed times and owners), so the same code uploads the same object.
    """

    def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = _normalise(tarfile.TarInfo(name))
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))

    destination.parent.mkdir(parents=True, exist_ok=True)
    with (
        destination.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w") as tar,
    ):
        for path, name in _source_files():
            tar.add(path, arcname=name, recursive=False, filter=_normalise)
        _add_bytes(tar, "requirements.txt", _container_requirements())
        _add_bytes(tar, "train.py", LAUNCHER)
    return destination


def upload_channels(s3: Any, channels: Mapping[str, Path], *, bucket: str, prefix: str) -> dict[str, str]:
    """Mirror each prepared channel to s3://bucket/<prefix><channel>/ (stale objects removed) and return the URIs."""
    uris: dict[str, str] = {}
    for name, source in channels.items():
        channel_prefix = f"{prefix}{name}/"
        files = (
            {path.relative_to(source).as_posix(): path for path in sorted(source.rglob("*")) if path.is_file()}
            if source.is_dir()
            else {source.name: source}
        )
        for relative, path in files.items():
            s3.upload_file(str(path), bucket, channel_prefix + relative)
        wanted = {channel_prefix + relative for relative in files}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=channel_prefix):
            stale = [{"Key": item["Key"]} for item in page.get("Contents", []) if item["Key"] not in wanted]
            if stale:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": stale, "Quiet": True})
        uris[name] = f"s3://{bucket}/{channel_prefix}"
    return uris


def metric_definitions() -> list[dict[str, str]]:
    """The entry point's own regexes for its metric lines, so SageMaker charts what the job prints."""
    return [dict(definition) for definition in METRIC_DEFINITIONS]


def create_training_job_request(
    job: JobRequest,
    target: SageMakerTarget,
    *,
    region: str,
    source_uri: str,
    channel_uris: Mapping[str, str],
    metrics: list[dict[str, str]],
) -> dict[str, Any]:
    """The CreateTrainingJob request, as the SageMaker Python SDK's PyTorch estimator would send it in script mode."""
    entry, job_name = job.entry, job.job_name
    placement = entry.training
    model_prefix = f"s3://{target.bucket}/{target.platform.models_prefix}{entry.name}/"
    framework = {
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": source_uri,
        "sagemaker_region": region,
        "sagemaker_job_name": job_name,
        "sagemaker_container_log_level": 20,
    }
    if placement.instance_count > 1:
        framework |= {"sagemaker_torch_distributed_enabled": True, "sagemaker_instance_type": placement.instance_type}
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": placement.max_run_s}
    if placement.use_spot:
        stopping["MaxWaitTimeInSeconds"] = 2 * placement.max_run_s  # room to wait for spot capacity
    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "HyperParameters": encode_hyperparameters({**job.hyperparameters, **framework}),
        "AlgorithmSpecification": {
            "TrainingImage": target.image_uri or training_image_uri(region),
            "TrainingInputMode": "File",
            "MetricDefinitions": metrics,
            "EnableSageMakerMetricsTimeSeries": True,
        },
        "RoleArn": target.role_arn,
        "OutputDataConfig": {"S3OutputPath": f"{model_prefix}training-jobs/"},
        "ResourceConfig": {
            "InstanceType": placement.instance_type,
            "InstanceCount": placement.instance_count,
            "VolumeSizeInGB": target.volume_size_gb,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": placement.use_spot,
        "CheckpointConfig": {"S3Uri": f"{model_prefix}checkpoints/{job_name}/", "LocalPath": CONTAINER_CHECKPOINT_DIR},
        "Environment": job.environment,
        "Tags": [{"Key": "model", "Value": entry.name}],
    }
    if channel_uris:
        request["InputDataConfig"] = [
            {
                "ChannelName": name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }
            for name, uri in channel_uris.items()
        ]
    return request


def wait_for_training_job(
    sagemaker: Any, job_name: str, *, poll_s: int = 60, timeout_s: int = 6 * 3600
) -> dict[str, Any]:
    """Block until the job completes; a failed or stopped job raises with SageMaker's failure reason."""
    waiter = sagemaker.get_waiter("training_job_completed_or_stopped")
    try:
        waiter.wait(
            TrainingJobName=job_name, WaiterConfig={"Delay": poll_s, "MaxAttempts": max(1, timeout_s // poll_s)}
        )
    except WaiterError as error:
        if "Max attempts exceeded" in str(error):
            raise TrainingJobError(f"training job {job_name} still running after {timeout_s} s") from error
    description = sagemaker.describe_training_job(TrainingJobName=job_name)
    status = description["TrainingJobStatus"]
    if status != "Completed":
        reason = description.get("FailureReason", "no reason given")
        raise TrainingJobError(f"training job {job_name} ended {status}: {reason}")
    return description


def _split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def download_package(s3: Any, artifacts_uri: str, package_dir: Path) -> Path:
    """Fetch the job's model.tar.gz and publish its contents (the package) at package_dir."""
    bucket, key = _split_s3_uri(artifacts_uri)
    package_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=package_dir.parent, prefix=f".{package_dir.name}.download-") as scratch:
        archive = Path(scratch) / "model.tar.gz"
        s3.download_file(bucket, key, str(archive))
        extracted = Path(scratch) / "model"
        extracted.mkdir()
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(extracted, filter="data")  # refuses absolute paths, links out, device files
        return publish_package(extracted, package_dir)


def start_training_job(job: JobRequest, target: SageMakerTarget, *, sagemaker: Any, s3: Any) -> str:
    """Upload the code and the prepared channels, then CreateTrainingJob; returns the job name."""
    entry, platform = job.entry, target.platform
    channels = job.prepare_channels()
    tarball = build_source_tarball(job.work_dir / SOURCE_TARBALL)
    source_key = f"{platform.models_prefix}{entry.name}/training-jobs/{job.job_name}/source/{SOURCE_TARBALL}"
    s3.upload_file(str(tarball), target.bucket, source_key)
    dataset_prefix = f"{platform.datasets_prefix}{entry.name}/"
    channel_uris = upload_channels(s3, channels, bucket=target.bucket, prefix=dataset_prefix)
    request = create_training_job_request(
        job,
        target,
        region=sagemaker.meta.region_name,
        source_uri=f"s3://{target.bucket}/{source_key}",
        channel_uris=channel_uris,
        metrics=metric_definitions(),
    )
    sagemaker.create_training_job(**request)
    print(
        f"[{entry.name}] submitted SageMaker training job {job.job_name} ({entry.training.instance_type})", flush=True
    )
    return job.job_name


def download_output_data(s3: Any, artifacts_uri: str, output_data_dir: Path) -> bool:
    """Fetch the job's output.tar.gz (its SM_OUTPUT_DATA_DIR: evaluation report, curves) next to model.tar.gz.

    Returns False when the job wrote none; the package alone is what later steps need.
    """
    bucket, key = _split_s3_uri(artifacts_uri)
    output_key = key.rsplit("/", 1)[0] + "/output.tar.gz"
    output_data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_data_dir.parent) as scratch:
        archive = Path(scratch) / "output.tar.gz"
        try:
            s3.download_file(bucket, output_key, str(archive))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return False
            raise
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(output_data_dir, filter="data")
    return True


def collect_training_job(
    sagemaker: Any,
    s3: Any,
    job_name: str,
    package_dir: Path,
    *,
    output_data_dir: Path | None = None,
    poll_s: int = 60,
    timeout_s: int = 6 * 3600,
) -> Path:
    """Wait for the job, publish its model.tar.gz as the package folder, and fetch its output data if asked."""
    description = wait_for_training_job(sagemaker, job_name, poll_s=poll_s, timeout_s=timeout_s)
    artifacts = description["ModelArtifacts"]["S3ModelArtifacts"]
    try:
        package = download_package(s3, artifacts, package_dir)
    except ClientError as error:
        raise TrainingJobError(f"training job {job_name} completed but {artifacts} is unreadable: {error}") from error
    if output_data_dir is not None and not download_output_data(s3, artifacts, output_data_dir):
        print(f"training job {job_name} wrote no output.tar.gz next to {artifacts}", flush=True)
    return package


def train_on_sagemaker(job: JobRequest, target: SageMakerTarget, *, sagemaker: Any, s3: Any) -> Path:
    """The whole SageMaker round trip for one model: submit, wait (spot waits included), download the package."""
    job_name = start_training_job(job, target, sagemaker=sagemaker, s3=s3)
    return collect_training_job(
        sagemaker,
        s3,
        job_name,
        job.package_dir,
        output_data_dir=job.work_dir / "output" / "data",
        poll_s=target.poll_s,
        timeout_s=2 * job.entry.training.max_run_s + 600,
    )
