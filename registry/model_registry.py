"""The registry of record, SageMaker Model Registry: a model package group per catalog model, a model package
version per trained package, carrying its S3 location, metrics, sha256, parity and approval status.

Only this module talks to SageMaker; it takes boto3 clients, so the local stack hands it moto's and `--aws` real ones.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import ClientError

from functions.runtime.package import ModelPackage, PackageError, load_package, read_manifest
from registry.store import manifest_sha256, write_archive

ApprovalStatus = Literal["Approved", "PendingManualApproval", "Rejected"]
GROUP_PREFIX = "model-serving-"
ARCHIVE = "model.tar.gz"
EVALUATION = "evaluation.json"
METRIC_PREFIX = "metric."
# CustomerMetadataProperties: at most 50 entries, keys 1-128 and values 1-256 characters of this alphabet (AWS API).
METADATA_LIMIT = 50
METADATA_PATTERN = re.compile(r"^[\w\s.:/=+\-@]+$")


class RegistryError(RuntimeError):
    """A registry request that cannot be done (unknown model or version); the message says which."""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RegisteredVersion:
    """One model package version as the registry describes it."""

    name: str
    version: str
    number: int  # SageMaker's ModelPackageVersion within the group: 1, 2, ...
    arn: str
    status: str
    created_at: str
    metadata: dict[str, str] = field(default_factory=dict)
    approval_description: str = ""
    description: str = ""
    model_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        return {
            key[len(METRIC_PREFIX) :]: float(value)
            for key, value in self.metadata.items()
            if key.startswith(METRIC_PREFIX)
        }

    @property
    def parity_passed(self) -> bool:
        return self.metadata.get("parity") == "passed"

    @property
    def approved_at(self) -> str:
        return self.metadata.get("approved_at", "")

    @property
    def archive_sha256(self) -> str:
        return self.metadata.get("archive_sha256", "")

    @property
    def manifest_sha256(self) -> str:
        return self.metadata.get("manifest_sha256", "")

    @property
    def package_uri(self) -> str:
        return self.metadata.get("package_uri", "")

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> RegisteredVersion:
        metadata = dict(description.get("CustomerMetadataProperties") or {})
        created = description.get("CreationTime")
        return cls(
            name=metadata.get("model", ""),
            version=metadata.get("version", ""),
            number=int(description.get("ModelPackageVersion", 0)),
            arn=description["ModelPackageArn"],
            status=description.get("ModelApprovalStatus", ""),
            created_at=metadata.get("created_at") or (created.isoformat() if isinstance(created, datetime) else ""),
            metadata=metadata,
            approval_description=description.get("ApprovalDescription") or "",
            description=description.get("ModelPackageDescription") or "",
            model_metrics=description.get("ModelMetrics") or {},
        )


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric metrics as dotted keys (`baseline.test_accuracy`): metadata values are strings, one per key."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat |= flat_metrics(value, f"{prefix}{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def check_metadata(properties: dict[str, str]) -> dict[str, str]:
    """Refuse what SageMaker would refuse (moto does not check), so the local registry is as strict as AWS."""
    if len(properties) > METADATA_LIMIT:
        raise RegistryError(f"{len(properties)} metadata properties; SageMaker allows {METADATA_LIMIT}")
    for key, value in properties.items():
        if not (0 < len(key) <= 128 and METADATA_PATTERN.match(key)):
            raise RegistryError(f"metadata key {key!r} is not allowed by SageMaker")
        if not (0 < len(value) <= 256 and METADATA_PATTERN.match(value)):
            raise RegistryError(f"metadata value {value!r} of {key!r} is not allowed by SageMaker")
    return properties


class ModelRegistry:
    """Model package groups and versions in one account and region, with the packages under the bucket's models/."""

    def __init__(
        self,
        sagemaker: Any,
        s3: Any,
        bucket: str,
        *,
        models_prefix: str = "models/",
        on_change: Callable[[ModelRegistry], None] | None = None,
        on_upload: Callable[[str, Path], None] | None = None,
        on_fetch: Callable[[str], None] | None = None,
    ) -> None:
        """`on_change` runs after every change, `on_upload` for every object written and `on_fetch` before an object
        is read (the local registry's copy on disk)."""
        self.sagemaker = sagemaker
        self.s3 = s3
        self.bucket = bucket
        self.models_prefix = models_prefix
        self._on_change = on_change
        self._on_upload = on_upload
        self._on_fetch = on_fetch

    @staticmethod
    def group_name(name: str) -> str:
        return f"{GROUP_PREFIX}{name}"

    def version_prefix(self, name: str, version: str) -> str:
        return f"{self.models_prefix}{name}/{version}/"

    def groups(self) -> list[str]:
        """The model names that have a group."""
        names: list[str] = []
        paginator = self.sagemaker.get_paginator("list_model_package_groups")
        for page in paginator.paginate(NameContains=GROUP_PREFIX):
            for group in page["ModelPackageGroupSummaryList"]:
                if group["ModelPackageGroupName"].startswith(GROUP_PREFIX):
                    names.append(group["ModelPackageGroupName"][len(GROUP_PREFIX) :])
        return sorted(names)

    def ensure_group(self, name: str) -> None:
        try:
            self.sagemaker.describe_model_package_group(ModelPackageGroupName=self.group_name(name))
        except self.sagemaker.exceptions.ClientError as error:
            if "does not exist" not in str(error):
                raise
            self.sagemaker.create_model_package_group(
                ModelPackageGroupName=self.group_name(name),
                ModelPackageGroupDescription=f"Versions of the {name} model (models.toml)",
            )

    def _descriptions(self, name: str) -> Iterator[dict[str, Any]]:
        paginator = self.sagemaker.get_paginator("list_model_packages")
        try:
            pages = list(paginator.paginate(ModelPackageGroupName=self.group_name(name), SortBy="CreationTime"))
        except self.sagemaker.exceptions.ClientError:
            return
        for page in pages:
            for summary in page["ModelPackageSummaryList"]:
                yield self.sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])

    def versions(self, name: str) -> list[RegisteredVersion]:
        """Every registered version of `name`, in registration order."""
        found = [RegisteredVersion.from_description(description) for description in self._descriptions(name)]
        return sorted(found, key=lambda version: version.number)

    def version(self, name: str, version: str) -> RegisteredVersion:
        for registered in self.versions(name):
            if registered.version == version:
                return registered
        known = ", ".join(v.version for v in self.versions(name)) or "none"
        raise RegistryError(f"model {name!r} has no registered version {version!r} (registered: {known})")

    def approved(self, name: str) -> RegisteredVersion | None:
        """The served version: of the Approved ones, the one approved last."""
        approved = [v for v in self.versions(name) if v.status == "Approved"]
        return max(approved, key=lambda v: (v.approved_at, v.number)) if approved else None

    def register(self, package_dir: Path) -> RegisteredVersion:
        """Register a package (idempotent by version): its archive and evaluation report go to
        `models/<name>/<version>/`, and the first version of a model is approved, later ones wait for approval."""
        manifest = read_manifest(package_dir)
        name, version = manifest.name, manifest.version
        existing = [v for v in self.versions(name) if v.version == version]
        if existing:
            return existing[0]
        self.ensure_group(name)
        prefix = self.version_prefix(name, version)
        with tempfile.TemporaryDirectory(prefix="register-") as scratch:
            archive = Path(scratch) / ARCHIVE
            archive_sha = write_archive(package_dir, archive)
            evaluation = Path(scratch) / EVALUATION
            evaluation.write_text(
                json.dumps({"metrics": manifest.metrics, "parity": manifest.parity.model_dump()}, indent=2)
            )
            self._put(prefix + ARCHIVE, archive)
            self._put(prefix + EVALUATION, evaluation)
        first = not self.versions(name)
        now = utc_now()
        metadata = {
            "model": name,
            "version": version,
            "created_at": manifest.created_at or now,
            "package_uri": f"s3://{self.bucket}/{prefix}{ARCHIVE}",
            "archive_sha256": archive_sha,
            "manifest_sha256": manifest_sha256(package_dir),
            "parity": "passed" if manifest.parity.passed else "failed",
            **({"parity_max_abs_diff": f"{manifest.parity.max_abs_diff:.3g}"} if manifest.parity.max_abs_diff else {}),
            **{f"{METRIC_PREFIX}{key}": f"{value:.6g}" for key, value in flat_metrics(manifest.metrics).items()},
            **({"approved_at": now} if first else {}),
        }
        self.sagemaker.create_model_package(
            ModelPackageGroupName=self.group_name(name),
            ModelPackageDescription=f"{name} {version} ({manifest.task})",
            ModelApprovalStatus="Approved" if first else "PendingManualApproval",
            CustomerMetadataProperties=check_metadata(metadata),
            ModelMetrics={
                "ModelQuality": {
                    "Statistics": {
                        "ContentType": "application/json",
                        "S3Uri": f"s3://{self.bucket}/{prefix}{EVALUATION}",
                    }
                }
            },
        )
        if first:
            self.sagemaker.update_model_package(  # moto drops the description on create; AWS keeps it either way
                ModelPackageArn=self.version(name, version).arn,
                ModelApprovalStatus="Approved",
                ApprovalDescription="first version of the model: approved at registration",
                CustomerMetadataProperties=metadata,
            )
        self._changed()
        return self.version(name, version)

    def set_status(
        self, registered: RegisteredVersion, status: ApprovalStatus, description: str, **metadata: str
    ) -> RegisteredVersion:
        """Change a version's approval; the whole metadata map is sent (UpdateModelPackage merges keys; moto
        replaces the map, so sending all of it gives the same result on both)."""
        properties = check_metadata({**registered.metadata, **metadata})
        self.sagemaker.update_model_package(
            ModelPackageArn=registered.arn,
            ModelApprovalStatus=status,
            ApprovalDescription=description[:1024],
            CustomerMetadataProperties=properties,
        )
        self._changed()
        return self.version(registered.name, registered.version)

    def fetch(self, registered: RegisteredVersion, destination: Path) -> ModelPackage:
        """Download the version's archive, check its sha256 against the registry, unpack and verify it as serving
        would (every file's sha256, parity); raises RegistryError naming what failed."""
        archive = destination / ARCHIVE
        destination.mkdir(parents=True, exist_ok=True)
        key = self.version_prefix(registered.name, registered.version) + ARCHIVE
        if self._on_fetch is not None:
            self._on_fetch(key)
        try:
            self.s3.download_file(self.bucket, key, str(archive))
        except ClientError as error:
            raise RegistryError(
                f"{registered.name} {registered.version}: cannot read s3://{self.bucket}/{key}: {error}"
            ) from None
        with archive.open("rb") as handle:
            actual = hashlib.file_digest(handle, "sha256").hexdigest()
        if actual != registered.archive_sha256:
            raise RegistryError(
                f"{registered.name} {registered.version}: sha256 of {ARCHIVE} is {actual}, "
                f"the registry recorded {registered.archive_sha256 or 'none'}"
            )
        unpacked = destination / "package"
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(unpacked, filter="data")
        try:
            return load_package(unpacked)
        except PackageError as error:
            raise RegistryError(f"{registered.name} {registered.version}: {error}") from None

    def _put(self, key: str, path: Path) -> None:
        self.s3.upload_file(str(path), self.bucket, key)
        if self._on_upload is not None:
            self._on_upload(key, path)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)
