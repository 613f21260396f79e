"""The version lock (`models.lock.json`): which version of each model ships, written by promote, rollback and a
model's first registration, read offline by `cdk synth` and the local stack.

A file, not a registry call at synth: a promotion shows up as a reviewable diff, and synth needs no AWS access.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from catalog import ROOT
from functions.runtime.errors import describe_validation_error

LOCK_PATH = ROOT / "models.lock.json"
LOCK_FORMAT: Final = "version-lock/1"


class LockError(ValueError):
    """A lock file that cannot be read; the message names the file."""


class LockedVersion(BaseModel):
    """One model's approved version, and the digest that pins its exact contents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    archive_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    model_package_arn: str | None = None
    approved_at: str | None = None


class VersionLock(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["version-lock/1"] = LOCK_FORMAT
    models: dict[str, LockedVersion] = Field(default_factory=dict)

    def with_version(self, name: str, locked: LockedVersion) -> VersionLock:
        return self.model_copy(update={"models": {**self.models, name: locked}})


def read_lock(path: Path = LOCK_PATH) -> VersionLock:
    """The lock at `path`; an absent file is an empty lock (nothing approved yet)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return VersionLock()
    except json.JSONDecodeError as error:
        raise LockError(f"{path}: not valid JSON ({error})") from None
    try:
        return VersionLock.model_validate(document)
    except ValidationError as error:
        raise LockError(f"{path}: {describe_validation_error(error)}") from None


def write_lock(lock: VersionLock, path: Path = LOCK_PATH) -> None:
    """Write atomically (a reader such as the running local stack sees the old lock or the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(lock.model_dump_json(indent=2, exclude_none=True) + "\n", encoding="utf-8")
    partial.replace(path)


def lock_for(packages: Mapping[str, Path]) -> VersionLock:
    """A lock approving exactly these package folders (a stack synthesized over given packages: tests, policies)."""
    from functions.runtime.package import read_manifest
    from registry.store import manifest_sha256

    return VersionLock(
        models={
            name: LockedVersion(version=read_manifest(path).version, manifest_sha256=manifest_sha256(path))
            for name, path in packages.items()
        }
    )
