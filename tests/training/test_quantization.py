"""The int8 gate on real data: cosine for embedders, accuracy drop for classifiers, and fp32 when it fails."""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import onnx

from functions.runtime.package import Manifest, read_manifest
from tests.training.conftest import DIGITS_SOURCE as SOURCE
from training.export_spec import ExportSpec
from training.packaging import build_package
from training.quantization import gate_quantization


def test_embedding_gate_records_cosine_and_sizes(embedding_package: Path, embedding_manifest: Manifest) -> None:
    quantization = embedding_manifest.quantization
    assert quantization is not None
    assert quantization["metric"] == "min_cosine_vs_fp32"
    assert quantization["applied"] == (quantization["int8_metric"] >= 0.99)
    assert quantization["int8_size_bytes"] < quantization["fp32_size_bytes"] / 2
    shipped_size = (embedding_package / "model.onnx").stat().st_size
    expected = quantization["int8_size_bytes"] if quantization["applied"] else quantization["fp32_size_bytes"]
    assert shipped_size == expected
    assert embedding_manifest.graph.precision == ("int8" if quantization["applied"] else "fp32")


def test_classifier_gate_keeps_int8_within_half_a_point(digits_package: Path) -> None:
    manifest = read_manifest(digits_package)
    quantization = manifest.quantization
    assert quantization is not None
    assert quantization["metric"] == "val_accuracy"
    assert quantization["applied"] is True, quantization["reason"]
    assert quantization["fp32_metric"] - quantization["int8_metric"] <= 0.005
    assert manifest.graph.precision == "int8"
    ops = Counter(node.op_type for node in onnx.load(str(digits_package / "model.onnx")).graph.node)
    assert ops["ConvInteger"] == 2  # both convolutions, not just the last layer
    assert ops["MatMulInteger"] == 2
    assert quantization["int8_size_bytes"] < quantization["fp32_size_bytes"] / 3


def test_failing_gate_ships_fp32_and_says_why(digits_spec: ExportSpec, tmp_path: Path) -> None:
    # given a gate no int8 graph can meet (accuracy must improve by a full point)
    strict_gate = partial(gate_quantization, max_accuracy_drop=-0.01)
    # when
    package = build_package(
        digits_spec, tmp_path / "digits", name="digits", version="v1", metrics={}, source=SOURCE, gate=strict_gate
    )
    # then
    manifest = read_manifest(package)
    assert manifest.quantization is not None
    assert manifest.quantization["applied"] is False
    assert "exceeds the allowed -0.01" in manifest.quantization["reason"]
    assert manifest.graph.precision == "fp32"
    assert (package / "model.onnx").stat().st_size == manifest.quantization["fp32_size_bytes"]
