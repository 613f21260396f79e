"""The Triton model repository a SageMaker GPU endpoint serves: config.pbtxt derived from the package manifest."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

from functions.runtime.package import TRITON_DIR, Manifest, TensorSpec

TRITON_ARCHIVE = f"{TRITON_DIR}model.tar.gz"
MAX_QUEUE_DELAY_MICROSECONDS = 2_000
PREFERRED_BATCH_SIZES = (4, 8, 16, 32, 64, 128)
TRITON_DATATYPES = {
    "BOOL": "TYPE_BOOL",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "BYTES": "TYPE_STRING",
}


def _tensor_block(tensor: TensorSpec) -> str:
    """One input/output entry; dims leave out the batch dimension, which Triton adds from max_batch_size."""
    dims = ", ".join(str(d) for d in tensor.shape[1:])
    data_type = TRITON_DATATYPES[tensor.datatype]
    return f'  {{\n    name: "{tensor.name}"\n    data_type: {data_type}\n    dims: [ {dims} ]\n  }}'


def preferred_batch_sizes(max_batch_size: int) -> list[int]:
    sizes = [size for size in PREFERRED_BATCH_SIZES if size < max_batch_size]
    return [*sizes, max_batch_size]


def triton_config(manifest: Manifest, max_batch_size: int, tensorrt: bool = False) -> str:
    """config.pbtxt text for the ONNX Runtime backend, from the graph I/O the manifest records."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
    graph = manifest.graph
    for tensor in (*graph.inputs, *graph.outputs):
        if not tensor.shape or tensor.shape[0] != -1:
            raise ValueError(f"tensor {tensor.name} has no dynamic batch dimension: {tensor.shape}")
    inputs = ",\n".join(_tensor_block(t) for t in graph.inputs)
    outputs = ",\n".join(_tensor_block(t) for t in graph.outputs)
    preferred = ", ".join(str(s) for s in preferred_batch_sizes(max_batch_size))
    text = (
        f'name: "{manifest.name}"\n'
        'platform: "onnxruntime_onnx"\n'
        'backend: "onnxruntime"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{inputs}\n]\n"
        f"output [\n{outputs}\n]\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {preferred} ]\n"
        f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_MICROSECONDS}\n"
        "}\n"
        "instance_group [\n  {\n    kind: KIND_GPU\n    count: 1\n  }\n]\n"
    )
    if tensorrt:
        text += (
            "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator : [ {\n"
            '      name : "tensorrt"\n'
            '      parameters { key: "precision_mode" value: "FP16" }\n'
            "    } ]\n  }\n}\n"
        )
    return text


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def write_triton_repository(
    package_dir: Path, manifest: Manifest, graph: Path, max_batch_size: int, *, tensorrt: bool = False
) -> Path:
    """triton/model.tar.gz holding <name>/config.pbtxt and <name>/1/model.onnx, byte-for-byte reproducible."""
    name = manifest.name
    target = package_dir / TRITON_ARCHIVE
    target.parent.mkdir(parents=True, exist_ok=True)
    config = triton_config(manifest, max_batch_size, tensorrt).encode()
    with (
        target.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        _add_bytes(archive, f"{name}/config.pbtxt", config)
        _add_bytes(archive, f"{name}/1/model.onnx", graph.read_bytes())
    return target
