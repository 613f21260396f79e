"""The package build_package writes: the manifest contract, checksums, metrics of the shipped graph, atomic writes."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from functions.runtime.package import Manifest, load_package, read_manifest
from tests.training.conftest import DIGITS_SOURCE as SOURCE
from tests.training.conftest import perturbed
from training.export import OPSET, ExportError
from training.export_spec import ExportSpec
from training.packaging import build_package
from training.parity import ParityError


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_lists_every_file_with_its_checksum(embedding_package: Path, embedding_manifest: Manifest) -> None:
    files = sorted(p.relative_to(embedding_package).as_posix() for p in embedding_package.rglob("*") if p.is_file())
    assert sorted(embedding_manifest.files) == [f for f in files if f != "manifest.json"]
    for name, record in embedding_manifest.files.items():
        path = embedding_package / name
        assert record.model_dump(mode="json") == {"sha256": sha256(path), "size_bytes": path.stat().st_size}


def test_manifest_follows_the_package_contract(embedding_manifest: Manifest) -> None:
    manifest = embedding_manifest.model_dump(mode="json")
    assert manifest["format"] == "model-package/1"
    assert (manifest["name"], manifest["task"]) == ("embeddings", "sentence-embedding")
    assert manifest["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    assert manifest["graph"]["file"] == "model.onnx"
    assert manifest["graph"]["opset"] == OPSET
    assert manifest["graph"]["inputs"] == [
        {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]},
    ]
    assert manifest["graph"]["outputs"] == [{"name": "sentence_embedding", "datatype": "FP32", "shape": [-1, 384]}]
    assert set(manifest["versions"]) >= {"torch", "transformers", "onnx", "onnxruntime"}
    assert manifest["source"]["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["created_at"].endswith("Z")


def test_manifest_keeps_every_key_of_the_format(digits_package: Path) -> None:
    # what serving, the deploy gate and people read: the keys model-package/1 has always written
    written = read_manifest(digits_package).model_dump(mode="json", exclude_none=True)
    assert set(written) == {
        "format", "name", "version", "task", "inputs", "outputs", "labels", "preprocessing", "graph", "metrics",
        "parity", "quantization", "files", "source", "versions", "export_timings_s", "created_at",
    }  # fmt: skip
    assert set(written["graph"]) == {"file", "opset", "precision", "inputs", "outputs", "optimization"}
    assert set(written["parity"]) == {"passed", "tolerance", "max_abs_diff", "argmax_agreement", "cases"}
    assert set(written["quantization"]) == {
        "applied", "method", "metric", "fp32_metric", "int8_metric", "threshold", "reason", "fp32_size_bytes",
        "int8_size_bytes", "gate", "thresholds", "figures",
    }  # fmt: skip
    assert written["preprocessing"] == {"image_shape": [8, 8], "pixel_scale": 16.0}
    timed_steps = {"export", "optimize", "parity", "quantize", "quantization_gate", "test_metric"}
    assert set(written["export_timings_s"]) == timed_steps
    assert load_package(digits_package).manifest == read_manifest(digits_package)


def test_shipped_graph_test_accuracy_is_merged_into_metrics(digits_spec: ExportSpec, digits_package: Path) -> None:
    manifest = read_manifest(digits_package).model_dump(mode="json")
    session = ort.InferenceSession(str(digits_package / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(["logits"], feeds)[0] for feeds in digits_spec.test_feeds])
    expected = float(np.mean(logits.argmax(1) == digits_spec.test_labels))
    assert manifest["metrics"]["test_accuracy"] == pytest.approx(expected)
    assert manifest["metrics"]["test_accuracy"] > 0.9
    assert manifest["metrics"]["val_accuracy"] == 0.9
    assert manifest["parity"]["argmax_agreement"] == 1.0


def test_failed_rebuild_keeps_the_previous_package(digits_spec: ExportSpec, digits_package: Path) -> None:
    before = (digits_package / "manifest.json").read_bytes()
    with pytest.raises(ParityError):
        build_package(perturbed(digits_spec), digits_package, name="digits", version="v2", metrics={}, source=SOURCE)
    assert (digits_package / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in digits_package.parent.iterdir()) == ["digits"]


def test_a_spec_without_its_manifest_part_is_refused(digits_spec: ExportSpec, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="declares no manifest part"):
        build_package(replace(digits_spec, manifest=None), tmp_path / "digits", name="digits", version="v1",
                      metrics={}, source=SOURCE)  # fmt: skip
    assert not (tmp_path / "digits").exists()


def test_mount_point_package_is_replaced_in_place(
    digits_spec: ExportSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given SageMaker's /opt/ml/model: a mount point holding a stale file, which cannot itself be renamed
    model_dir = tmp_path / "opt" / "ml" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "stale.txt").write_text("from an earlier attempt")
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == model_dir or real_ismount(path))
    # when parity fails, the old contents stay and no staging dir is left behind
    with pytest.raises(ParityError):
        build_package(perturbed(digits_spec), model_dir, name="digits", version="v1", metrics={}, source=SOURCE)
    assert [p.name for p in model_dir.iterdir()] == ["stale.txt"]
    # when it succeeds, the package replaces the contents of the same directory
    package = build_package(digits_spec, model_dir, name="digits", version="v2", metrics={}, source=SOURCE)
    assert package == model_dir
    assert sorted(p.name for p in model_dir.iterdir()) == ["manifest.json", "model.onnx"]
    assert sorted(p.name for p in model_dir.parent.iterdir()) == ["model"]
    manifest = read_manifest(model_dir)
    assert manifest.files["model.onnx"].sha256 == sha256(model_dir / "model.onnx")
