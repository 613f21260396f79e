"""The Triton model repository: config.pbtxt checked by Triton's own model-config protobuf, archive layout."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from functions.runtime.package import Manifest, TensorSpec, read_manifest, sha256_of
from training.export_spec import ExportSpec
from training.packaging import build_package
from training.triton_repository import TRITON_ARCHIVE, triton_config, write_triton_repository

SOURCE = {"base_model": "digits-cnn", "dataset": "sklearn digits", "profile": "test"}
TYPES = {"INT64": model_config_pb2.TYPE_INT64, "FP32": model_config_pb2.TYPE_FP32}


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def assert_tensors_match(parsed: list, described: list[TensorSpec]) -> None:
    assert [t.name for t in parsed] == [t.name for t in described]
    assert [t.data_type for t in parsed] == [TYPES[t.datatype] for t in described]
    assert [list(t.dims) for t in parsed] == [t.shape[1:] for t in described]


def test_text_config_parses_and_matches_the_graph(embedding_manifest: Manifest) -> None:
    config = parse(triton_config(embedding_manifest, max_batch_size=64))
    assert config.name == "embeddings"
    assert config.platform == "onnxruntime_onnx"
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 64
    assert_tensors_match(config.input, embedding_manifest.graph.inputs)
    assert_tensors_match(config.output, embedding_manifest.graph.outputs)
    assert [list(t.dims) for t in config.input] == [[-1], [-1]]
    assert list(config.output[0].dims) == [384]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16, 32, 64]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_GPU, 1)]
    assert not config.HasField("optimization")


def test_tensorrt_accelerator_is_optional(embedding_manifest: Manifest) -> None:
    config = parse(triton_config(embedding_manifest, max_batch_size=16, tensorrt=True))
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert dict(accelerator.parameters) == {"precision_mode": "FP16"}
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]


def test_config_refuses_a_graph_without_a_batch_dimension(embedding_manifest: Manifest) -> None:
    document = embedding_manifest.model_dump(mode="json")
    document["graph"]["outputs"][0]["shape"] = [1, 384]
    fixed = Manifest.model_validate(document)
    with pytest.raises(ValueError, match="sentence_embedding"):
        triton_config(fixed, max_batch_size=8)
    with pytest.raises(ValueError, match="max_batch_size"):
        triton_config(embedding_manifest, max_batch_size=0)


@pytest.fixture(scope="module")
def gpu_package(digits_spec: ExportSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SageMaker-targeted package: fp32 graph plus its Triton repository."""
    return build_package(
        digits_spec,
        tmp_path_factory.mktemp("gpu") / "digits",
        name="digits",
        version="v1",
        metrics={},
        source=SOURCE,
        triton_max_batch_size=32,
        tensorrt=True,
    )


def test_gpu_package_holds_the_fp32_graph_in_a_triton_repository(gpu_package: Path) -> None:
    manifest = read_manifest(gpu_package)
    archive_path = gpu_package / TRITON_ARCHIVE
    assert manifest.files[TRITON_ARCHIVE].sha256 == sha256_of(archive_path)
    # the CPU graph (model.onnx) went through the int8 gate; the GPU's graph is fp32 whatever the gate said
    assert manifest.quantization is not None
    assert manifest.quantization["applied"] is True, manifest.quantization["reason"]
    assert manifest.graph.precision == "int8"
    with tarfile.open(archive_path, "r:gz") as archive:
        assert archive.getnames() == ["digits/config.pbtxt", "digits/1/model.onnx"]
        graph = archive.extractfile("digits/1/model.onnx")
        config_file = archive.extractfile("digits/config.pbtxt")
        assert graph is not None
        assert config_file is not None
        triton_graph = onnx.load_model_from_string(graph.read())
        config = parse(config_file.read().decode())
    triton_ops = {node.op_type for node in triton_graph.graph.node}
    assert not triton_ops & {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}
    assert "MatMulInteger" in {node.op_type for node in onnx.load(str(gpu_package / "model.onnx")).graph.node}
    assert config.name == "digits"
    assert config.max_batch_size == 32
    assert_tensors_match(config.input, manifest.graph.inputs)
    assert_tensors_match(config.output, manifest.graph.outputs)
    assert list(config.input[0].dims) == [1, 8, 8]
    assert config.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"


def test_archive_is_byte_for_byte_reproducible(gpu_package: Path, tmp_path: Path) -> None:
    manifest = read_manifest(gpu_package)
    fp32_graph = tmp_path / "fp32.onnx"
    with tarfile.open(gpu_package / TRITON_ARCHIVE, "r:gz") as archive:
        member = archive.extractfile("digits/1/model.onnx")
        assert member is not None
        fp32_graph.write_bytes(member.read())
    again = write_triton_repository(tmp_path / "again", manifest, fp32_graph, 32, tensorrt=True)
    assert again.read_bytes() == (gpu_package / TRITON_ARCHIVE).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(again.read_bytes()), mode="r:gz") as archive:
        assert {member.mtime for member in archive.getmembers()} == {0}
