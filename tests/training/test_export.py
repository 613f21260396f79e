"""The export step on real models: manifest contract, checksums, fusions, parity and the quantisation gate."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.training.conftest import minilm_dir, perturbed, tweet_texts
from training.export import (
    OPSET,
    OptimizationError,
    ParityError,
    build_package,
    export_onnx,
    gate_quantization,
    optimize_graph,
    validate_parity,
)
from training.export_spec import ExportSpec

SOURCE = {"base_model": "digits-cnn", "dataset": "sklearn digits", "hyperparameters": {"epochs": 6}, "profile": "test"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_lists_every_file_with_its_checksum(embedding_package: Path, embedding_manifest: dict) -> None:
    files = sorted(p.relative_to(embedding_package).as_posix() for p in embedding_package.rglob("*") if p.is_file())
    assert sorted(embedding_manifest["files"]) == [f for f in files if f != "manifest.json"]
    for name, record in embedding_manifest["files"].items():
        path = embedding_package / name
        assert record == {"sha256": sha256(path), "size_bytes": path.stat().st_size}


def test_manifest_follows_the_package_contract(embedding_manifest: dict) -> None:
    manifest = embedding_manifest
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


def test_parity_passed_on_every_real_case(embedding_manifest: dict) -> None:
    parity = embedding_manifest["parity"]
    assert parity["passed"] is True
    assert [case["name"] for case in parity["cases"]] == ["batch-1", "mixed-length", "max-length"]
    assert parity["cases"][2]["shape"] == [2, 128]
    assert all(case["max_abs_diff"] <= parity["tolerance"] for case in parity["cases"])
    assert parity["max_abs_diff"] == max(case["max_abs_diff"] for case in parity["cases"])


def test_transformer_fusions_are_in_the_fp32_graph(embedding_spec: ExportSpec, embedding_manifest: dict) -> None:
    fused = embedding_manifest["graph"]["optimization"]["fused_ops"]
    assert fused["Attention"] == 6  # one per MiniLM layer
    assert fused["SkipLayerNormalization"] >= 6
    assert fused.get("BiasGelu", 0) + fused.get("Gelu", 0) + fused.get("FastGelu", 0) == 6


def test_export_leaves_the_module_attention_as_it_was(embedding_spec: ExportSpec, embedding_package: Path) -> None:
    # export traces eager attention (SDPA does not fuse), then must hand the module back unchanged
    config = getattr(embedding_spec.module.get_submodule("encoder"), "config")  # noqa: B009  # typed as Module
    assert config._attn_implementation == "sdpa"


def test_shipped_embeddings_equal_sentence_transformers(embedding_package: Path, embedding_manifest: dict) -> None:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    texts = tweet_texts(100)[72:100]  # sentences the export never saw
    expected = SentenceTransformer(str(minilm_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    tokenizer = Tokenizer.from_file(str(embedding_package / "tokenizer.json"))
    tokenizer.enable_truncation(embedding_manifest["preprocessing"]["max_length"])
    tokenizer.enable_padding()
    encodings = tokenizer.encode_batch(texts)
    feeds = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }
    session = ort.InferenceSession(str(embedding_package / "model.onnx"), providers=["CPUExecutionProvider"])
    (actual,) = session.run(["sentence_embedding"], feeds)
    cosine = np.sum(actual * expected, axis=1) / np.linalg.norm(actual, axis=1) / np.linalg.norm(expected, axis=1)
    required = 0.9999 if embedding_manifest["graph"]["precision"] == "fp32" else 0.99
    assert cosine.min() >= required


def test_missing_transformer_fusions_fail_the_optimisation(digits_spec: ExportSpec, tmp_path: Path) -> None:
    # given a graph declared as BERT that has no attention to fuse
    not_bert = replace(digits_spec, transformer=(12, 384))
    raw = export_onnx(not_bert, tmp_path / "exported.onnx")
    # when / then
    with pytest.raises(OptimizationError, match="Attention"):
        optimize_graph(not_bert, raw, tmp_path / "optimized.onnx")
    assert not (tmp_path / "optimized.onnx").exists()


def test_shipped_graph_runs_with_onnxruntime_alone(embedding_spec: ExportSpec, embedding_package: Path) -> None:
    session = ort.InferenceSession(str(embedding_package / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = embedding_spec.parity_cases[1][1]
    (embeddings,) = session.run(["sentence_embedding"], feeds)
    assert embeddings.shape == (feeds["input_ids"].shape[0], 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3)


def test_embedding_gate_records_cosine_and_sizes(embedding_package: Path, embedding_manifest: dict) -> None:
    quantization = embedding_manifest["quantization"]
    assert quantization["metric"] == "min_cosine_vs_fp32"
    assert quantization["applied"] == (quantization["int8_metric"] >= 0.99)
    assert quantization["int8_size_bytes"] < quantization["fp32_size_bytes"] / 2
    shipped_size = (embedding_package / "model.onnx").stat().st_size
    expected = quantization["int8_size_bytes"] if quantization["applied"] else quantization["fp32_size_bytes"]
    assert shipped_size == expected
    assert embedding_manifest["graph"]["precision"] == ("int8" if quantization["applied"] else "fp32")


@pytest.fixture(scope="module")
def digits_package(digits_spec: ExportSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_package(
        digits_spec,
        tmp_path_factory.mktemp("digits") / "digits",
        name="digits",
        version="20261123T090000Z",
        metrics={"val_accuracy": 0.9},
        source=SOURCE,
    )


def test_classifier_gate_keeps_int8_within_half_a_point(digits_package: Path) -> None:
    manifest = json.loads((digits_package / "manifest.json").read_text())
    quantization = manifest["quantization"]
    assert quantization["metric"] == "val_accuracy"
    assert quantization["applied"] is True, quantization["reason"]
    assert quantization["fp32_metric"] - quantization["int8_metric"] <= 0.005
    assert manifest["graph"]["precision"] == "int8"
    ops = Counter(node.op_type for node in onnx.load(str(digits_package / "model.onnx")).graph.node)
    assert ops["ConvInteger"] == 2  # both convolutions, not just the last layer
    assert ops["MatMulInteger"] == 2
    assert quantization["int8_size_bytes"] < quantization["fp32_size_bytes"] / 3


def test_shipped_graph_test_accuracy_is_merged_into_metrics(digits_spec: ExportSpec, digits_package: Path) -> None:
    manifest = json.loads((digits_package / "manifest.json").read_text())
    session = ort.InferenceSession(str(digits_package / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(["logits"], feeds)[0] for feeds in digits_spec.test_feeds])
    expected = float(np.mean(logits.argmax(1) == digits_spec.test_labels))
    assert manifest["metrics"]["test_accuracy"] == pytest.approx(expected)
    assert manifest["metrics"]["test_accuracy"] > 0.9
    assert manifest["metrics"]["val_accuracy"] == 0.9
    assert manifest["parity"]["argmax_agreement"] == 1.0


def test_failing_gate_ships_fp32_and_says_why(digits_spec: ExportSpec, tmp_path: Path) -> None:
    # given a gate no int8 graph can meet (accuracy must improve by a full point)
    strict_gate = partial(gate_quantization, max_accuracy_drop=-0.01)
    # when
    package = build_package(
        digits_spec, tmp_path / "digits", name="digits", version="v1", metrics={}, source=SOURCE, gate=strict_gate
    )
    # then
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["quantization"]["applied"] is False
    assert "exceeds the allowed -0.01" in manifest["quantization"]["reason"]
    assert manifest["graph"]["precision"] == "fp32"
    assert (package / "model.onnx").stat().st_size == manifest["quantization"]["fp32_size_bytes"]


def test_perturbed_module_raises_parity_error_and_leaves_no_package(digits_spec: ExportSpec, tmp_path: Path) -> None:
    out_dir = tmp_path / "packages" / "digits"
    with pytest.raises(ParityError) as error:
        build_package(perturbed(digits_spec), out_dir, name="digits", version="v1", metrics={}, source=SOURCE)
    assert [case.name for case in error.value.report.failures] == ["batch-1", "batch-32"]
    assert all(case.max_abs_diff == pytest.approx(0.05, abs=1e-4) for case in error.value.report.failures)
    assert "batch-1 shape=[1, 1, 8, 8]" in str(error.value)
    assert "batch-32 shape=[32, 1, 8, 8]" in str(error.value)
    assert list((tmp_path / "packages").iterdir()) == []


def test_failed_rebuild_keeps_the_previous_package(digits_spec: ExportSpec, digits_package: Path) -> None:
    before = (digits_package / "manifest.json").read_bytes()
    with pytest.raises(ParityError):
        build_package(perturbed(digits_spec), digits_package, name="digits", version="v2", metrics={}, source=SOURCE)
    assert (digits_package / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in digits_package.parent.iterdir()) == ["digits"]


def test_perturbed_graph_fails_every_case(digits_spec: ExportSpec, tmp_path: Path) -> None:
    # given a correctly exported graph whose first weight is then tampered with
    path = export_onnx(digits_spec, tmp_path / "model.onnx")
    model = onnx.load(str(path))
    weight = model.graph.initializer[0]
    values = onnx.numpy_helper.to_array(weight) * 1.5
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(path))
    # when / then
    with pytest.raises(ParityError) as error:
        validate_parity(digits_spec, path)
    assert len(error.value.report.failures) == len(digits_spec.parity_cases)
    assert error.value.report.passed is False
    assert all(case.max_abs_diff > digits_spec.tolerance for case in error.value.report.cases)


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
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["files"]["model.onnx"]["sha256"] == sha256(model_dir / "model.onnx")
