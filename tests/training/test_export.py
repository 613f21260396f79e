"""ONNX export and optimisation on real models: the fused graph, the module left as it was, serving's runtime alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from functions.runtime.package import Manifest
from tests.training.conftest import minilm_dir, tweet_texts
from training.export import OptimizationError, export_onnx, optimize_graph
from training.export_spec import ExportSpec


def test_transformer_fusions_are_in_the_fp32_graph(embedding_spec: ExportSpec, embedding_manifest: Manifest) -> None:
    fused = embedding_manifest.model_dump(mode="json")["graph"]["optimization"]["fused_ops"]
    assert fused["Attention"] == 6  # one per MiniLM layer
    assert fused["SkipLayerNormalization"] >= 6
    assert fused.get("BiasGelu", 0) + fused.get("Gelu", 0) + fused.get("FastGelu", 0) == 6


def test_export_leaves_the_module_attention_as_it_was(embedding_spec: ExportSpec, embedding_package: Path) -> None:
    # export traces eager attention (SDPA does not fuse), then must hand the module back unchanged
    config = getattr(embedding_spec.module.get_submodule("encoder"), "config")  # noqa: B009  # typed as Module
    assert config._attn_implementation == "sdpa"


def test_shipped_embeddings_equal_sentence_transformers(embedding_package: Path, embedding_manifest: Manifest) -> None:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    texts = tweet_texts(100)[72:100]  # sentences the export never saw
    expected = SentenceTransformer(str(minilm_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    tokenizer = Tokenizer.from_file(str(embedding_package / "tokenizer.json"))
    max_length = embedding_manifest.preprocessing.max_length
    assert max_length is not None
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding()
    encodings = tokenizer.encode_batch(texts)
    feeds = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }
    session = ort.InferenceSession(str(embedding_package / "model.onnx"), providers=["CPUExecutionProvider"])
    (actual,) = session.run(["sentence_embedding"], feeds)
    cosine = np.sum(actual * expected, axis=1) / np.linalg.norm(actual, axis=1) / np.linalg.norm(expected, axis=1)
    if embedding_manifest.graph.precision == "fp32":
        assert cosine.min() >= 0.9999
    else:  # int8 ships only if it passed the retrieval gate, whose cosine bound is on the mean
        assert cosine.mean() >= 0.99


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
