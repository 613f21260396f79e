"""What the Lambda image adds to its base image: the runtime requirements as installed, plus one model package."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from catalog import ROOT
from functions.runtime.package import graph_files, read_manifest

REQUIREMENTS = ROOT / "functions" / "requirements.txt"
STAMP = ".requirements.sha256"


@dataclass(frozen=True)
class InstalledSize:
    bytes: int
    method: str  # "pip install --target" or "installed distributions' RECORD files"
    by_distribution_mb: dict[str, float] = field(default_factory=dict)  # the offline estimate's breakdown


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def pip_target_size(target: Path, requirements: Path = REQUIREMENTS) -> InstalledSize:
    """`pip install --no-deps --target` as the image build does it; reused while the requirements file is unchanged."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = target / STAMP
    if not (stamp.is_file() and stamp.read_text() == digest):
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-cache-dir",
             "--no-deps", "--target", str(target), "-r", str(requirements)],
            check=True,
        )  # fmt: skip
        stamp.write_text(digest)
    return InstalledSize(bytes=folder_bytes(target) - stamp.stat().st_size, method="pip install --target")


def _requirement_names(requirements: Path) -> list[str]:
    names = []
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(re.split(r"[\[=<>!~; ]", line, maxsplit=1)[0])
    return names


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def metadata_size(requirements: Path = REQUIREMENTS) -> InstalledSize:
    """Offline estimate: the files the listed distributions put on disk here (the image installs them --no-deps, so
    the list is complete: no dependency is walked)."""
    sizes: dict[str, int] = {}
    for name in map(_canonical, _requirement_names(requirements)):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        files = [Path(str(file.locate())) for file in dist.files or []]
        sizes[name] = sum(path.stat().st_size for path in files if path.is_file())
    ranked = sorted(sizes.items(), key=lambda item: -item[1])
    return InstalledSize(
        bytes=sum(sizes.values()),
        method="installed distributions' RECORD files (offline estimate)",
        by_distribution_mb={name: round(size / 1e6, 1) for name, size in ranked},
    )


def requirements_size(target: Path, *, offline: bool) -> InstalledSize:
    """pip's real install when allowed and reachable; the offline estimate otherwise."""
    if not offline:
        try:
            return pip_target_size(target)
        except (subprocess.CalledProcessError, OSError):
            pass
    return metadata_size()


def package_bytes(package_dir: Path, *, with_graph: bool = True) -> int:
    """What the image carries of a package: all of it, or all but the graph when the model runs on an endpoint."""
    if with_graph:
        return folder_bytes(package_dir)
    left_out = graph_files(read_manifest(package_dir))
    return sum(
        path.stat().st_size
        for path in package_dir.rglob("*")
        if path.is_file() and path.relative_to(package_dir).as_posix() not in left_out
    )
