"""Several versions of one real package, as training would leave them: same graph, own version and metrics."""

from __future__ import annotations

import shutil
from pathlib import Path

from functions.runtime.package import read_manifest, write_package
from registry.store import PackageStore


def add_version(store: PackageStore, base: Path, version: str, metrics: dict[str, float]) -> Path:
    """A copy of `base` filed in `store` as `version`, its manifest rewritten (write_package records the files)."""
    staging = store.root / f".staging-{version}"
    shutil.copytree(base, staging, symlinks=False)
    manifest = read_manifest(staging)
    write_package(staging, manifest.model_copy(update={"version": version, "metrics": metrics}))
    return store.add(staging)
