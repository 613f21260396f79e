"""Minimal but well-formed model packages for infra tests: the gate needs only a manifest, files and checksums."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

from catalog import ModelEntry, Target, Task
from functions.runtime.package import MANIFEST_FILE
from stacks.deploy_gate import TRITON_ARCHIVE


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


TASK_SHAPES: dict[str, dict] = {
    "text-classification": {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]}],
        "preprocessing": {"max_length": 128},
    },
    "sentence-embedding": {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}],
        "preprocessing": {"max_length": 256},
    },
    "image-classification": {
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 8, 8]}],
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]}],
        "preprocessing": {"image_shape": [8, 8], "pixel_scale": 16.0},
    },
}


def write_manifest(package: Path, entry: ModelEntry, *, parity: bool = True) -> None:
    """(Re)write manifest.json with the checksums of every other file in the folder."""
    files = {
        path.relative_to(package).as_posix(): {"sha256": _sha256(path), "size_bytes": path.stat().st_size}
        for path in sorted(package.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }
    graph_tensor = {"name": "logits", "datatype": "FP32", "shape": [-1, -1]}
    manifest = {
        "format": "model-package/1",
        "name": entry.name,
        "version": "20261123T000000Z",
        "task": str(entry.task),
        "labels": list(entry.labels),
        **TASK_SHAPES[str(entry.task)],
        "graph": {
            "file": "model.onnx",
            "opset": 17,
            "precision": "fp32",
            "inputs": [graph_tensor],
            "outputs": [graph_tensor],
        },
        "parity": {"passed": parity, "tolerance": 1e-4, "max_abs_diff": 0.0, "argmax_agreement": 1.0, "cases": []},
        "files": files,
    }
    (package / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))


def write_package(package: Path, entry: ModelEntry) -> Path:
    """A stand-in package: placeholder graph bytes, a Triton archive for GPU-placed models, a correct manifest."""
    package.mkdir(parents=True, exist_ok=True)
    (package / "model.onnx").write_bytes(b"placeholder graph for " + entry.name.encode())
    if entry.task is not Task.IMAGE_CLASSIFICATION:
        (package / "tokenizer.json").write_text("{}")
    if entry.target is Target.SAGEMAKER:
        archive = package / TRITON_ARCHIVE
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "w:gz") as tar:
            for member, payload in {
                f"{entry.name}/config.pbtxt": f'name: "{entry.name}"\nbackend: "onnxruntime"\n'.encode(),
                f"{entry.name}/1/model.onnx": b"placeholder",
            }.items():
                info = tarfile.TarInfo(member)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    write_manifest(package, entry)
    return package


def build_context(root: Path, packages: dict[str, Path]) -> Path:
    """A replica of the repository layout the image build sees: functions/, .dockerignore, build/models/<name>/."""
    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "functions", root / "functions", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(repo / ".dockerignore", root / ".dockerignore")
    models = root / "build" / "models"
    for name, source in packages.items():
        shutil.copytree(source, models / name)
    return root
