"""Publishing a package folder atomically: readers see the old package or the new one, never half of either.

The export writes through it into SM_MODEL_DIR; the driver publishes a finished job's package through it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from functions.runtime.package import MANIFEST_FILE

STAGING_PREFIX = ".staging-"


@contextlib.contextmanager
def staged_package(package_dir: Path) -> Iterator[Path]:
    """A folder to fill beside package_dir that replaces it whole when the block succeeds; removed when it fails.

    A mount point (SageMaker's /opt/ml/model) cannot be renamed, so there the staging folder lives inside it and
    its files replace the old ones only on success, manifest last: a package without a manifest is no package.
    """
    package_dir = Path(package_dir)
    in_place = package_dir.is_dir() and os.path.ismount(package_dir)
    root = package_dir if in_place else package_dir.parent
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{package_dir.name}{STAGING_PREFIX}", dir=root))
    staging.chmod(0o755)  # mkdtemp's 0700 would make the published package unreadable to other users (Lambda's)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if in_place:
        _replace_contents(package_dir, staging)
    else:
        _replace_folder(package_dir, staging)


def _replace_contents(package_dir: Path, staging: Path) -> None:
    for child in package_dir.iterdir():
        if child == staging:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    for child in sorted(staging.iterdir(), key=lambda c: c.name == MANIFEST_FILE):
        child.rename(package_dir / child.name)
    staging.rmdir()


def _replace_folder(package_dir: Path, staging: Path) -> None:
    retired = None
    if package_dir.exists():
        retired = package_dir.with_name(f".{package_dir.name}.old-{os.getpid()}-{time.time_ns()}")
        package_dir.rename(retired)
    staging.rename(package_dir)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
