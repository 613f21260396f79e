"""Package versions on disk: `build/models/<name>/<version>/`, one immutable folder per trained version.

Training adds versions here; the lock file says which one is served. `approved_package_dir` is the one function every
caller (local stack, bench, CDK app, tests) uses to find the package it should serve.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from catalog import PACKAGES_DIR
from functions.runtime.package import MANIFEST_FILE, PackageError, read_manifest
from registry.lock import LOCK_PATH, VersionLock, read_lock


class VersionExistsError(PackageError):
    """A version folder is immutable: a second package with the same name and version is refused."""


@dataclass(frozen=True)
class PackageStore:
    """The folder of package versions (default `build/models`)."""

    root: Path = PACKAGES_DIR

    def version_dir(self, name: str, version: str) -> Path:
        return self.root / name / version

    def versions(self, name: str) -> list[str]:
        """Every version on disk, oldest first (versions are UTC timestamps, so they sort by age)."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(child.name for child in folder.iterdir() if (child / MANIFEST_FILE).is_file())

    def latest(self, name: str) -> Path | None:
        versions = self.versions(name)
        return self.version_dir(name, versions[-1]) if versions else None

    def add(self, package_dir: Path) -> Path:
        """Move a finished package into `<name>/<version>/` (a rename: whole or not at all); never overwrites."""
        manifest = read_manifest(package_dir)
        target = self.version_dir(manifest.name, manifest.version)
        if target.exists():
            raise VersionExistsError(f"{manifest.name} {manifest.version} already exists at {target}")
        target.parent.mkdir(parents=True, exist_ok=True)
        Path(package_dir).rename(target)
        return target

    def adopt_unversioned(self) -> list[Path]:
        """Move packages of the earlier layout (`<name>/manifest.json`) into `<name>/<version>/`; returns them."""
        adopted: list[Path] = []
        if not self.root.is_dir():
            return adopted
        for folder in sorted(self.root.iterdir()):
            if not (folder / MANIFEST_FILE).is_file():
                continue
            version = read_manifest(folder).version
            staging = folder.with_name(f".{folder.name}.adopt")
            folder.rename(staging)
            folder.mkdir()
            staging.rename(folder / version)
            adopted.append(folder / version)
        return adopted


def locked_package_dir(packages_dir: Path, name: str, lock: VersionLock) -> Path:
    """The package to serve or deploy for `name`: the lock's version under `<packages_dir>/<name>/`.

    A folder that is itself a package (`<packages_dir>/<name>/manifest.json`, as tests and stand-ins lay them out) is
    that package; the deploy gate still checks it against the lock. With no lock entry, the model's folder is
    returned, which holds no package, so callers say "no package".
    """
    folder = Path(packages_dir) / name
    locked = lock.models.get(name)
    if locked is None or (folder / MANIFEST_FILE).is_file():
        return folder
    return folder / locked.version


def approved_package_dir(name: str, packages_dir: Path = PACKAGES_DIR, lock_path: Path = LOCK_PATH) -> Path:
    """`locked_package_dir` with the lock file: what the local stack, the bench and the tests serve."""
    return locked_package_dir(packages_dir, name, read_lock(lock_path))


def write_archive(package_dir: Path, destination: Path) -> str:
    """The package as `model.tar.gz` (SageMaker's artifact format), byte-for-byte reproducible; returns its sha256.

    Sorted members with zeroed times and owners: the same package always gives the same archive and digest.
    """
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w") as tar,
    ):
        for path in sorted(p for p in Path(package_dir).rglob("*") if p.is_file()):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(package_dir).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    data = buffer.getvalue()
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def manifest_sha256(package_dir: Path) -> str:
    """The manifest's digest: it lists every file's sha256, so it names the package's exact contents."""
    return hashlib.sha256((Path(package_dir) / MANIFEST_FILE).read_bytes()).hexdigest()
