"""The model package format (model-package/1), owned here: file names, hashing, the typed manifest, writer and loader.

Training writes packages and serving loads them through this one torch-free module; serving never imports training.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions.monitoring.profile import Reference
from functions.runtime.errors import ServingError, describe_validation_error
from functions.runtime.task_registry import TASKS, Task

MANIFEST_FILE = "manifest.json"
GRAPH_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
TRITON_DIR = "triton/"
MANIFEST_FORMAT: Final = "model-package/1"

Datatype = Literal["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]


class PackageError(ServingError):
    """A package that must not be served: missing files, wrong checksum, failed parity, bad manifest."""


class _Manifest(BaseModel):
    # Unknown keys are kept but ignored: training may add provenance without breaking serving.
    model_config = ConfigDict(extra="allow", frozen=True)


class TensorSpec(_Manifest):
    name: str
    datatype: Datatype
    shape: list[int]


class GraphSpec(_Manifest):
    file: str = GRAPH_FILE
    opset: int | None = None
    precision: str | None = None
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)


class Preprocessing(_Manifest):
    max_length: int | None = Field(default=None, ge=1)
    image_shape: list[int] | None = None
    pixel_scale: float | None = Field(default=None, gt=0)


class ParityRecord(_Manifest):
    passed: bool
    tolerance: float | None = None
    max_abs_diff: float | None = None
    argmax_agreement: float | None = None
    cases: list[dict[str, Any]] = Field(default_factory=list)


class FileRecord(_Manifest):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int | None = Field(default=None, ge=0)


class Manifest(_Manifest):
    """manifest.json, format model-package/1 (see the team design note)."""

    format: Literal["model-package/1"] = MANIFEST_FORMAT
    name: str
    version: str
    task: Task
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    labels: list[str] = Field(default_factory=list)
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    graph: GraphSpec
    parity: ParityRecord
    files: dict[str, FileRecord]
    metrics: dict[str, Any] = Field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    source: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, Any] = Field(default_factory=dict)
    created_at: str | None = None
    monitoring_reference: Reference | None = None  # what the drift check compares production with (absent: no check)


@dataclass(frozen=True)
class ModelPackage:
    """A verified package folder: every listed file matched its checksum and parity passed."""

    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def graph_path(self) -> Path:
        return self.path / self.manifest.graph.file

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def file_records(package_dir: Path) -> dict[str, FileRecord]:
    """sha256 and size of every file in the package except the manifest that lists them."""
    return {
        path.relative_to(package_dir).as_posix(): FileRecord(sha256=sha256_of(path), size_bytes=path.stat().st_size)
        for path in sorted(package_dir.rglob("*"))
        if path.is_file() and path.relative_to(package_dir).as_posix() != MANIFEST_FILE
    }


def write_package(package_dir: Path, manifest: Manifest) -> Manifest:
    """Record every file's checksum in the manifest and write it last: a folder without a manifest is no package."""
    complete = manifest.model_copy(update={"files": file_records(package_dir)})
    text = complete.model_dump_json(indent=2, exclude_none=True)
    (package_dir / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
    return complete


def read_manifest(path: Path) -> Manifest:
    """Parse manifest.json without verifying files (metadata only; serving always goes through load_package)."""
    manifest_path = Path(path) / MANIFEST_FILE
    try:
        document = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackageError(f"{path}: no {MANIFEST_FILE}") from None
    except json.JSONDecodeError as error:
        raise PackageError(f"{manifest_path}: not valid JSON ({error})") from None
    try:
        return Manifest.model_validate(document)
    except ValidationError as error:
        raise PackageError(f"{manifest_path}: invalid manifest: {describe_validation_error(error)}") from None


def graph_files(manifest: Manifest) -> set[str]:
    """The files only the graph's runner needs: a function whose model runs on an endpoint ships without them."""
    return {manifest.graph.file} | {name for name in manifest.files if name.startswith(TRITON_DIR)}


def load_package(path: Path | str, *, with_graph: bool = True) -> ModelPackage:
    """Load a package only if parity passed and every file matches its recorded size and sha256.

    `with_graph=False` (the model runs on a SageMaker endpoint) lets the graph files be absent; any present is checked.
    """
    path = Path(path)
    manifest = read_manifest(path)
    optional = set() if with_graph else graph_files(manifest)
    if manifest.parity.passed is not True:
        raise PackageError(f"{path}: parity did not pass for {manifest.name} {manifest.version}; refusing to serve it")
    traits = TASKS[manifest.task]
    required = {manifest.graph.file} | ({TOKENIZER_FILE} if traits.text else set())
    unlisted = sorted(required - set(manifest.files))
    if unlisted:
        raise PackageError(f"{path}: manifest lists no checksum for {', '.join(unlisted)}")
    for relative, record in sorted(manifest.files.items()):
        file_path = (path / relative).resolve()
        if not file_path.is_relative_to(path.resolve()):
            raise PackageError(f"{path}: file {relative!r} points outside the package")
        if not file_path.is_file() and relative in optional:
            continue
        if not file_path.is_file():
            raise PackageError(f"{path}: {relative} is listed in the manifest but missing")
        if record.size_bytes is not None and file_path.stat().st_size != record.size_bytes:
            raise PackageError(
                f"{path}: {relative} is {file_path.stat().st_size} bytes, manifest says {record.size_bytes}"
            )
        actual = sha256_of(file_path)
        if actual != record.sha256:
            raise PackageError(f"{path}: sha256 mismatch for {relative} (manifest {record.sha256}, file {actual})")
    if traits.text and not manifest.preprocessing.max_length:
        raise PackageError(f"{path}: a text model needs preprocessing.max_length")
    if not traits.text and not (manifest.preprocessing.image_shape and manifest.preprocessing.pixel_scale):
        raise PackageError(f"{path}: an image model needs preprocessing.image_shape and pixel_scale")
    return ModelPackage(path=path, manifest=manifest)
