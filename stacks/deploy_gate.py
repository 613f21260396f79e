"""The deploy gate: synth refuses any model whose package is missing, tampered with, without passing parity, or not
the version the registry approved (as `models.lock.json` records it: version and manifest digest).

It reuses the serving runtime's own verification (`load_package`), so what deploys is exactly what would load.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from catalog import ModelEntry, Target
from functions.runtime.package import MANIFEST_FILE, ModelPackage, PackageError, load_package
from registry.lock import VersionLock
from registry.store import locked_package_dir, manifest_sha256

TRITON_ARCHIVE = "triton/model.tar.gz"


class DeployGateError(RuntimeError):
    """A model package that must not ship; the message names the model and the reason."""


def verify_package(entry: ModelEntry, package_dir: Path) -> ModelPackage:
    """Checksums and parity via load_package; plus the model's name and, for GPU models, its Triton repository."""
    name = entry.name
    if not (package_dir / MANIFEST_FILE).is_file():
        raise DeployGateError(f"model {name!r}: no package at {package_dir} (missing {MANIFEST_FILE}); build it first")
    try:
        package = load_package(package_dir)
    except PackageError as error:
        raise DeployGateError(f"model {name!r}: {error}; refusing to deploy") from None
    if package.name != name:
        raise DeployGateError(f"model {name!r}: the package at {package_dir} is {package.name!r}")
    if entry.target is Target.SAGEMAKER and TRITON_ARCHIVE not in package.manifest.files:
        raise DeployGateError(f"model {name!r}: target is sagemaker but the manifest lists no {TRITON_ARCHIVE}")
    return package


def verify_approved(entry: ModelEntry, package: ModelPackage, lock: VersionLock) -> None:
    """The package must be the approved version, byte for byte (its manifest lists every file's sha256)."""
    name = entry.name
    locked = lock.models.get(name)
    if locked is None:
        raise DeployGateError(
            f"model {name!r}: no approved version in the version lock; "
            f"promote one: python -m registry promote {name} VERSION"
        )
    if package.version != locked.version:
        raise DeployGateError(
            f"model {name!r}: package {package.version} at {package.path} is not the approved version "
            f"{locked.version}; promote it first: python -m registry promote {name} {package.version}"
        )
    if manifest_sha256(package.path) != locked.manifest_sha256:
        raise DeployGateError(
            f"model {name!r}: package {package.version} at {package.path} differs from the approved one "
            "(manifest sha256 does not match the lock); refusing to deploy"
        )


def verify_packages(
    entries: Iterable[ModelEntry], packages_dir: Path, lock: VersionLock | None = None
) -> dict[str, ModelPackage]:
    """Run the gate over every model that will be deployed, before any stack is built.

    With a lock (as the CDK app always passes), each model's approved version is the package checked and shipped.
    """
    packages = {}
    for entry in entries:
        package = verify_package(entry, locked_package_dir(packages_dir, entry.name, lock or VersionLock()))
        if lock is not None:
            verify_approved(entry, package, lock)
        packages[entry.name] = package
    return packages
