"""The registry on this machine: SageMaker Model Registry and S3 as the local stack's moto serves them, kept on disk
under `build/registry/` so versions and approvals survive restarts of the stack.

The running local stack announces its moto in `running.json`; registry commands and training use that one, so a
version registered while the stack runs appears in it at once. With no stack running they start a private moto,
load the saved state, make their change, and save it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from catalog import PACKAGES_DIR, ROOT, Platform, load_catalog
from local.clients import client
from local.config import BOOTSTRAP, Credentials
from registry.lock import LOCK_PATH
from registry.model_registry import ModelRegistry, RegisteredVersion
from registry.promotion import register_version

REGISTRY_DIR = ROOT / "build" / "registry"
LOCAL_BUCKET = "model-serving-local"


@dataclass(frozen=True)
class RegistryHome:
    """Where one registry lives on disk: the package versions, the saved registry state, and the lock it writes."""

    packages_dir: Path = PACKAGES_DIR
    state_dir: Path = REGISTRY_DIR
    lock_path: Path = LOCK_PATH

    @property
    def snapshot_path(self) -> Path:
        return self.state_dir / "snapshot.json"

    @property
    def objects_dir(self) -> Path:
        return self.state_dir / "objects"

    @property
    def running_path(self) -> Path:
        return self.state_dir / "running.json"


@dataclass(frozen=True)
class RunningStack:
    """What a running local stack tells registry commands: its moto, its bucket, and who may sign."""

    aws_url: str
    bucket: str
    admin: Credentials
    pid: int


def announce(home: RegistryHome, stack: RunningStack) -> None:
    home.state_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "aws_url": stack.aws_url,
        "bucket": stack.bucket,
        "pid": stack.pid,
        "admin": [stack.admin.access_key_id, stack.admin.secret_access_key],
    }
    partial = home.running_path.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps(document))
    partial.replace(home.running_path)


def withdraw(home: RegistryHome) -> None:
    home.running_path.unlink(missing_ok=True)


def running_stack(home: RegistryHome) -> RunningStack | None:
    """The local stack serving this home's registry, if its process is alive and its moto answers."""
    try:
        document = json.loads(home.running_path.read_text())
        os.kill(int(document["pid"]), 0)
        with urllib.request.urlopen(f"{document['aws_url']}/moto-api/data.json", timeout=2):
            pass
    except (OSError, ValueError, KeyError):
        return None
    access, secret = document["admin"]
    return RunningStack(document["aws_url"], document["bucket"], Credentials(access, secret), int(document["pid"]))


def save_snapshot(home: RegistryHome, registry: ModelRegistry) -> None:
    """Every group and version as CreateModelPackage would recreate them, in registration order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for name in registry.groups():
        groups[name] = [
            {
                "status": v.status,
                "approval_description": v.approval_description,
                "description": v.description,
                "model_metrics": v.model_metrics,
                "metadata": v.metadata,
            }
            for v in registry.versions(name)
        ]
    home.state_dir.mkdir(parents=True, exist_ok=True)
    partial = home.snapshot_path.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps({"groups": groups}, indent=1))
    partial.replace(home.snapshot_path)


def mirror_object(home: RegistryHome, key: str, path: Path) -> None:
    target = home.objects_dir / key
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)


def restore_object(home: RegistryHome, s3: Any, bucket: str, key: str) -> None:
    """Put a saved object back into a fresh moto's bucket when it is read first (archives are large: a registry
    command that only lists versions should not upload them all)."""
    saved = home.objects_dir / key
    if not saved.is_file():
        return
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
        s3.upload_file(str(saved), bucket, key)


def restore(home: RegistryHome, sagemaker: Any) -> int:
    """Load the saved registry into a fresh moto: groups and versions in their order (objects when first read).

    Returns the number of versions restored.
    """
    if not home.snapshot_path.is_file():
        return 0
    restored = 0
    for name, versions in json.loads(home.snapshot_path.read_text())["groups"].items():
        group = ModelRegistry.group_name(name)
        sagemaker.create_model_package_group(
            ModelPackageGroupName=group, ModelPackageGroupDescription=f"Versions of the {name} model (models.toml)"
        )
        for saved in versions:
            metadata = saved["metadata"]
            arn = sagemaker.create_model_package(
                ModelPackageGroupName=group,
                ModelPackageDescription=saved["description"],
                ModelApprovalStatus=saved["status"],
                CustomerMetadataProperties=metadata,
                **({"ModelMetrics": saved["model_metrics"]} if saved["model_metrics"] else {}),
            )["ModelPackageArn"]
            if saved["approval_description"]:
                sagemaker.update_model_package(
                    ModelPackageArn=arn,
                    ModelApprovalStatus=saved["status"],
                    ApprovalDescription=saved["approval_description"],
                    CustomerMetadataProperties=metadata,
                )
            restored += 1
    return restored


def local_model_registry(home: RegistryHome, aws_url: str, bucket: str, credentials: Credentials) -> ModelRegistry:
    """A registry on a local moto whose every change is saved under the home."""
    s3 = client("s3", aws_url, credentials)
    return ModelRegistry(
        client("sagemaker", aws_url, credentials),
        s3,
        bucket,
        models_prefix=load_catalog().platform.models_prefix,
        on_change=lambda registry: save_snapshot(home, registry),
        on_upload=lambda key, path: mirror_object(home, key, path),
        on_fetch=lambda key: restore_object(home, s3, bucket, key),
    )


@contextlib.contextmanager
def local_registry(home: RegistryHome | None = None) -> Iterator[ModelRegistry]:
    """The local registry: the running stack's, or a private moto loaded from disk for the length of the block."""
    from local.aws import MotoServer

    home = home or RegistryHome()
    stack = running_stack(home)
    if stack is not None:
        yield local_model_registry(home, stack.aws_url, stack.bucket, stack.admin)
        return
    moto = MotoServer(0)
    try:
        client("s3", moto.url, BOOTSTRAP).create_bucket(Bucket=LOCAL_BUCKET)
        restore(home, client("sagemaker", moto.url, BOOTSTRAP))
        yield local_model_registry(home, moto.url, LOCAL_BUCKET, BOOTSTRAP)
    finally:
        moto.stop()


def register_package(package_dir: Path, home: RegistryHome | None = None) -> RegisteredVersion:
    """Register a trained package in the local registry; a model's first version is approved and locked."""
    home = home or RegistryHome()
    with local_registry(home) as registry:
        return register_version(registry, package_dir, home.lock_path)


def aws_registry(bucket: str, platform: Platform, region: str | None = None) -> ModelRegistry:
    """The registry of record in an AWS account (the artifacts bucket holds the packages)."""
    import boto3

    session = boto3.Session(region_name=region)
    return ModelRegistry(
        session.client("sagemaker"), session.client("s3"), bucket, models_prefix=platform.models_prefix
    )
