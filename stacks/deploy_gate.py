"""The deploy gate: synth refuses any model whose package is missing, tampered with or without passing parity.

It reuses the serving runtime's own verification (`load_package`), so what deploys is exactly what would load.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from catalog import ModelEntry, Target
from functions.runtime.package import MANIFEST_FILE, ModelPackage, PackageError, load_package

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


def verify_packages(entries: Iterable[ModelEntry], packages_dir: Path) -> dict[str, ModelPackage]:
    """Run the gate over every model that will be deployed, before any stack is built."""
    return {entry.name: verify_package(entry, packages_dir / entry.name) for entry in entries}
