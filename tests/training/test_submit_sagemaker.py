"""SageMaker mode against moto: the CreateTrainingJob request as sent, the S3 layout, and the artifact round trip."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from catalog import ROOT, load_catalog
from functions.runtime.package import load_package
from tests.unit.handmade_packages import build_handmade_package
from training.job_logging import METRIC_DEFINITIONS
from training.jobs.request import JobRequest, TrainingJobError
from training.jobs.sagemaker_job import (
    LAUNCHER,
    PYTORCH_TRAINING_TAG,
    SageMakerTarget,
    build_source_tarball,
    collect_training_job,
    create_training_job_request,
    start_training_job,
    train_on_sagemaker,
    training_image_uri,
)

BUCKET = "model-artifacts-test"
ROLE = "arn:aws:iam::123456789012:role/model-training"
REGION = "us-east-1"


class SentRequests:
    """The request bodies botocore put on the wire, as moto received them (moto rewrites MetricDefinitions)."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[dict[str, Any]]] = {}

    def __call__(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.bodies.setdefault(model.name, []).append(json.loads(params["body"]))


@pytest.fixture
def aws() -> Iterator[tuple[Any, Any, SentRequests]]:
    with mock_aws():
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        sent = SentRequests()
        sagemaker.meta.events.register("before-call.sagemaker.CreateTrainingJob", sent)
        yield sagemaker, s3, sent


def _keys(s3: Any, prefix: str) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def _target() -> SageMakerTarget:
    return SageMakerTarget(role_arn=ROLE, bucket=BUCKET, platform=load_catalog().platform, poll_s=1)


def _start_digits(sagemaker: Any, s3: Any, tmp_path: Path) -> str:
    job = JobRequest.create(
        load_catalog().model("digits"),
        profile="demo",
        work_dir=tmp_path / "work",
        job_name="digits-demo-20261123-093000",
    )
    return start_training_job(job, _target(), sagemaker=sagemaker, s3=s3)


def test_the_training_job_request_moto_received_is_a_script_mode_pytorch_job(aws, tmp_path: Path) -> None:
    # given
    sagemaker, s3, sent = aws
    entry = load_catalog().model("digits")

    # when
    job_name = _start_digits(sagemaker, s3, tmp_path)

    # then: what SageMaker stored
    job = sagemaker.describe_training_job(TrainingJobName=job_name)
    assert job["AlgorithmSpecification"]["TrainingImage"] == (
        f"763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:{PYTORCH_TRAINING_TAG}"
    )
    assert job["ResourceConfig"]["InstanceType"] == entry.training.instance_type == "ml.g5.xlarge"
    assert job["ResourceConfig"]["InstanceCount"] == 1
    assert job["RoleArn"] == ROLE
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == entry.training.max_run_s
    assert job["StoppingCondition"]["MaxWaitTimeInSeconds"] >= entry.training.max_run_s
    assert job["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/models/digits/checkpoints/{job_name}/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/models/digits/training-jobs/"
    hyperparameters = job["HyperParameters"]
    assert all(isinstance(value, str) for value in hyperparameters.values())
    assert json.loads(hyperparameters["sagemaker_program"]) == "train.py"
    assert json.loads(hyperparameters["sagemaker_submit_directory"]) == (
        f"s3://{BUCKET}/models/digits/training-jobs/{job_name}/source/sourcedir.tar.gz"
    )
    assert json.loads(hyperparameters["sagemaker_region"]) == REGION
    assert json.loads(hyperparameters["model_name"]) == "digits"
    assert json.loads(hyperparameters["profile"]) == "demo"
    assert json.loads(hyperparameters["job_name"]) == job_name
    assert {key: json.loads(hyperparameters[key]) for key in entry.hyperparameters} == entry.hyperparameters
    assert "sagemaker_torch_distributed_enabled" not in hyperparameters
    channels = {channel["ChannelName"]: channel for channel in job["InputDataConfig"]}
    assert sorted(channels) == ["test", "train", "validation"]
    assert channels["train"]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/datasets/digits/train/"

    # and: what was on the wire (moto replaces MetricDefinitions with its own and drops Environment)
    (body,) = sent.bodies["CreateTrainingJob"]
    assert body["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    assert body["HyperParameters"] == hyperparameters
    assert body["Environment"]["HF_HUB_OFFLINE"] == "1"


def test_code_and_channels_land_under_the_catalog_prefixes(aws, tmp_path: Path) -> None:
    # given: a stale object from an earlier upload of the train channel
    sagemaker, s3, _ = aws
    s3.put_object(Bucket=BUCKET, Key="datasets/digits/train/stale.npz", Body=b"old")

    # when
    job_name = _start_digits(sagemaker, s3, tmp_path)

    # then
    assert _keys(s3, "datasets/digits/") == [
        "datasets/digits/test/data.npz",
        "datasets/digits/train/data.npz",
        "datasets/digits/validation/data.npz",
    ]
    source_key = f"models/digits/training-jobs/{job_name}/source/sourcedir.tar.gz"
    assert _keys(s3, f"models/digits/training-jobs/{job_name}/") == [source_key]
    archive = s3.get_object(Bucket=BUCKET, Key=source_key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        names = set(tar.getnames())
        requirements = tar.extractfile("requirements.txt").read().decode()  # type: ignore[union-attr]
        launcher = tar.extractfile("train.py").read()  # type: ignore[union-attr]
    assert {"train.py", "requirements.txt", "catalog.py", "models.toml", "training/train.py"} <= names
    assert {"training/environment.py", "training/datasets.py", "training/export.py"} <= names
    assert {"functions/runtime/package.py", "functions/runtime/task_registry.py"} <= names  # the package contract
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert requirements.startswith((ROOT / "training" / "requirements.txt").read_text().rstrip("\n"))
    assert "torch==" in requirements
    assert "pydantic==" in requirements
    assert launcher == LAUNCHER


def test_the_source_tarball_is_reproducible(tmp_path: Path) -> None:
    first = build_source_tarball(tmp_path / "a.tar.gz").read_bytes()
    second = build_source_tarball(tmp_path / "b.tar.gz").read_bytes()
    assert first == second


def test_the_job_model_tar_gz_becomes_a_loadable_package(aws, tmp_path: Path) -> None:
    # given: a submitted job, and the model.tar.gz its container would write where SageMaker reports it
    sagemaker, s3, _ = aws
    job_name = _start_digits(sagemaker, s3, tmp_path)
    artifacts = sagemaker.describe_training_job(TrainingJobName=job_name)["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifacts == f"s3://{BUCKET}/models/digits/training-jobs/{job_name}/output/model.tar.gz"
    trained = build_handmade_package("digits", tmp_path / "trained")
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(trained.iterdir()):
            tar.add(path, arcname=path.name)  # SageMaker tars /opt/ml/model's contents at the archive root
    s3.upload_file(str(archive), BUCKET, artifacts.removeprefix(f"s3://{BUCKET}/"))
    report = io.BytesIO()
    with tarfile.open(fileobj=report, mode="w:gz") as tar:  # and the output.tar.gz of its SM_OUTPUT_DATA_DIR
        info = tarfile.TarInfo("evaluation.json")
        info.size = len(b'{"model": "digits"}')
        tar.addfile(info, io.BytesIO(b'{"model": "digits"}'))
    s3.put_object(
        Bucket=BUCKET, Key=f"models/digits/training-jobs/{job_name}/output/output.tar.gz", Body=report.getvalue()
    )

    # when
    package_dir = collect_training_job(
        sagemaker, s3, job_name, tmp_path / "models" / "digits", output_data_dir=tmp_path / "output", poll_s=1
    )

    # then
    package = load_package(package_dir)
    assert json.loads((tmp_path / "output" / "evaluation.json").read_text()) == {"model": "digits"}
    assert package.name == "digits"
    assert sorted(path.name for path in package_dir.iterdir()) == sorted(path.name for path in trained.iterdir())
    assert [path.name for path in package_dir.parent.iterdir()] == ["digits"]  # no staging folders left behind


def test_a_job_without_model_artifacts_fails_loudly(aws, tmp_path: Path) -> None:
    sagemaker, s3, _ = aws
    job = JobRequest.create(
        load_catalog().model("digits"), work_dir=tmp_path / "work", package_dir=tmp_path / "models" / "digits"
    )
    with pytest.raises(TrainingJobError, match=r"model\.tar\.gz is unreadable"):
        train_on_sagemaker(job, _target(), sagemaker=sagemaker, s3=s3)
    assert not (tmp_path / "models" / "digits").exists()


def test_several_instances_run_under_torch_distributed_without_spot(tmp_path: Path) -> None:
    entry = load_catalog().model("sentiment")
    placement = entry.training.model_copy(update={"instance_count": 2, "use_spot": False})
    entry = entry.model_copy(update={"training": placement})
    job = JobRequest.create(
        entry, profile="full", overrides={"epochs": 3}, job_name="sentiment-full-1", work_dir=tmp_path / "work"
    )

    request = create_training_job_request(
        job,
        _target(),
        region="eu-west-1",
        source_uri=f"s3://{BUCKET}/code.tar.gz",
        channel_uris={},
        metrics=[],
    )

    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert request["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": entry.training.max_run_s}
    assert request["EnableManagedSpotTraining"] is False
    assert "InputDataConfig" not in request
    assert request["AlgorithmSpecification"]["TrainingImage"] == training_image_uri("eu-west-1")


@pytest.mark.parametrize(
    ("region", "registry"),
    [
        ("us-east-1", "763104351884.dkr.ecr.us-east-1.amazonaws.com"),
        ("ap-east-1", "871362719292.dkr.ecr.ap-east-1.amazonaws.com"),
        ("me-south-1", "217643126080.dkr.ecr.me-south-1.amazonaws.com"),
        ("af-south-1", "626614931356.dkr.ecr.af-south-1.amazonaws.com"),
        ("eu-south-1", "692866216735.dkr.ecr.eu-south-1.amazonaws.com"),
        ("cn-north-1", "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn"),
    ],
)
def test_the_training_image_comes_from_the_regions_registry(region: str, registry: str) -> None:
    assert training_image_uri(region) == f"{registry}/pytorch-training:{PYTORCH_TRAINING_TAG}"


def test_a_verbose_job_logs_the_libraries_too(tmp_path: Path) -> None:
    entry = load_catalog().model("digits")
    quiet = JobRequest.create(entry, work_dir=tmp_path / "work", job_name="digits-demo-1")
    verbose = JobRequest.create(entry, work_dir=tmp_path / "work", job_name="digits-demo-2", verbose=True)
    uris = {"source_uri": f"s3://{BUCKET}/code.tar.gz", "channel_uris": {}, "metrics": []}

    assert "LOG_LEVEL" not in create_training_job_request(quiet, _target(), region=REGION, **uris)["Environment"]
    assert create_training_job_request(verbose, _target(), region=REGION, **uris)["Environment"] == {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "LOG_LEVEL": "DEBUG",
    }
