"""The int8 gates on real data: retrieval quality for embedders, accuracy drop for classifiers, fp32 when one fails."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import pytest

from functions.runtime.package import Manifest, read_manifest
from tests.training.conftest import DIGITS_SOURCE as SOURCE
from training.export_spec import ExportSpec, QuantizationRecipe
from training.graph_scoring import nearest_neighbours, neighbour_overlap
from training.packaging import build_package
from training.quantization import (
    MIN_MEAN_COSINE,
    MIN_NEIGHBOUR_OVERLAP,
    MIN_RETRIEVAL_TEXTS,
    gate_quantization,
)
from training.tasks.sentence_embedding import INT8_RECIPE


def ring(points: int) -> np.ndarray:
    """Unit vectors evenly spaced on a circle: each point's neighbours are known by construction."""
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def test_nearest_neighbours_on_a_ring_are_the_adjacent_points() -> None:
    neighbours = nearest_neighbours(ring(12), k=2)
    assert [sorted(row) for row in neighbours[[0, 5]]] == [[1, 11], [4, 6]]


def test_neighbour_overlap_on_constructed_data() -> None:
    reference = ring(40)
    # a rotation and a rescaling keep every neighbour
    rotation = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    assert neighbour_overlap(reference, 3.0 * reference @ rotation, k=4) == 1.0
    # moving point 0 to the far side of the ring changes exactly what a reader can count:
    # point 0 loses all 4 of its neighbours, its 4 old neighbours each lose it (1 of 4),
    # and the 4 points around its new place each gain it in place of one neighbour (1 of 4)
    moved = reference.copy()
    moved[0] = [np.cos(np.pi + 0.01), np.sin(np.pi + 0.01)]
    expected = (40 * 4 - 4 - 4 - 4) / (40 * 4)
    assert neighbour_overlap(reference, moved, k=4) == pytest.approx(expected)
    # unrelated embeddings share almost no neighbours
    random = np.random.default_rng(0).normal(size=(40, 2))
    assert neighbour_overlap(reference, random, k=4) < 0.5


def test_neighbour_overlap_needs_more_texts_than_neighbours() -> None:
    with pytest.raises(ValueError, match="more than 10 texts"):
        neighbour_overlap(ring(10), ring(10), k=10)


def test_embedding_gate_records_retrieval_figures(embedding_package: Path, embedding_manifest: Manifest) -> None:
    quantization = embedding_manifest.quantization
    assert quantization is not None
    figures, thresholds = quantization["figures"], quantization["thresholds"]
    assert figures["texts"] >= MIN_RETRIEVAL_TEXTS  # the fixture holds out enough real tweets for the real gate
    assert thresholds == {
        "min_top10_neighbour_overlap": MIN_NEIGHBOUR_OVERLAP,
        "min_mean_cosine": MIN_MEAN_COSINE,
        "min_texts": MIN_RETRIEVAL_TEXTS,
    }
    passes = figures["top10_neighbour_overlap"] >= 0.95 and figures["mean_cosine"] >= 0.99
    assert quantization["applied"] == passes, quantization["reason"]
    assert quantization["method"] == INT8_RECIPE.method
    assert quantization["int8_size_bytes"] < quantization["fp32_size_bytes"]
    shipped_size = (embedding_package / "model.onnx").stat().st_size
    expected = quantization["int8_size_bytes"] if quantization["applied"] else quantization["fp32_size_bytes"]
    assert shipped_size == expected
    assert embedding_manifest.graph.precision == ("int8" if quantization["applied"] else "fp32")


@pytest.fixture(scope="module")
def embedding_fp32_int8(embedding_spec: ExportSpec, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The fp32 graph and the shipped recipe's int8 graph, built once for the gate tests below."""
    from training.export import export_onnx, optimize_graph
    from training.quantization import quantize_graph

    folder = tmp_path_factory.mktemp("retrieval-gate")
    raw, fp32, int8 = folder / "raw.onnx", folder / "fp32.onnx", folder / "int8.onnx"
    export_onnx(embedding_spec, raw)
    optimize_graph(embedding_spec, raw, fp32)
    return fp32, quantize_graph(fp32, int8, embedding_spec.int8_recipe)


def test_retrieval_gate_refuses_int8_below_its_thresholds(
    embedding_spec: ExportSpec, embedding_manifest: Manifest, embedding_fp32_int8: tuple[Path, Path]
) -> None:
    # given the thresholds set just above what this int8 graph reaches (the session package measured the same graphs)
    fp32, int8 = embedding_fp32_int8
    assert embedding_manifest.quantization is not None
    measured = embedding_manifest.quantization["figures"]
    above = partial(
        gate_quantization,
        min_neighbour_overlap=measured["top10_neighbour_overlap"] + 1e-3,
        min_mean_cosine=min(measured["mean_cosine"], 0.9),
    )
    # when / then
    refused = above(embedding_spec, fp32, int8)
    assert refused.applied is False
    assert "top10_neighbour_overlap" in refused.reason
    # and with thresholds at what it reaches, the same graph passes (the thresholds are what decide)
    at = partial(
        gate_quantization,
        min_neighbour_overlap=measured["top10_neighbour_overlap"],
        min_mean_cosine=measured["mean_cosine"],
    )
    assert at(embedding_spec, fp32, int8).applied is True


def test_retrieval_gate_refuses_too_few_held_out_texts(
    embedding_spec: ExportSpec, embedding_fp32_int8: tuple[Path, Path]
) -> None:
    # given 128 held-out texts and thresholds on overlap and cosine that any graph meets
    fp32, int8 = embedding_fp32_int8
    few = replace(embedding_spec, validation_feeds=embedding_spec.validation_feeds[:4])
    lenient = partial(gate_quantization, min_neighbour_overlap=0.0, min_mean_cosine=0.0)
    # when / then: too few texts to judge ranking, so int8 is refused
    decision = lenient(few, fp32, int8)
    assert decision.applied is False
    assert f"texts 128.0000 < {MIN_RETRIEVAL_TEXTS}" in decision.reason
    # and without the minimum the same figures would pass
    assert lenient(few, fp32, int8, min_retrieval_texts=0).applied is True


def test_bad_recipe_is_refused_and_fp32_ships(embedding_spec: ExportSpec, tmp_path: Path) -> None:
    # given a recipe known to wreck MiniLM: per-tensor weights at full range
    bad = replace(embedding_spec, int8_recipe=QuantizationRecipe(per_channel=False, reduce_range=False))
    # when
    package = build_package(bad, tmp_path / "embeddings", name="embeddings", version="v1", metrics={}, source=SOURCE)
    # then
    manifest = read_manifest(package)
    quantization = manifest.quantization
    assert quantization is not None
    assert quantization["applied"] is False
    assert quantization["figures"]["top10_neighbour_overlap"] < MIN_NEIGHBOUR_OVERLAP
    assert quantization["method"] == "dynamic-int8"
    assert manifest.graph.precision == "fp32"
    assert (package / "model.onnx").stat().st_size == quantization["fp32_size_bytes"]


def test_passing_gate_ships_int8_and_records_its_figures(embedding_spec: ExportSpec, tmp_path: Path) -> None:
    # given thresholds this recipe meets on the held-out tweets (the real ones may refuse it: see the test above)
    reachable = partial(gate_quantization, min_neighbour_overlap=0.5, min_mean_cosine=0.9)
    # when
    package = build_package(
        embedding_spec, tmp_path / "embeddings", name="embeddings", version="v1", metrics={}, source=SOURCE,
        gate=reachable,
    )  # fmt: skip
    # then
    manifest = read_manifest(package)
    quantization = manifest.quantization
    assert quantization is not None
    assert quantization["applied"] is True, quantization["reason"]
    assert quantization["thresholds"]["min_top10_neighbour_overlap"] == 0.5
    assert 0.5 <= quantization["figures"]["top10_neighbour_overlap"] <= 1.0
    assert manifest.graph.precision == "int8"
    ops = Counter(node.op_type for node in onnx.load(str(package / "model.onnx")).graph.node)
    assert ops["MatMulInteger"] > 0


def test_classifier_gate_keeps_int8_within_half_a_point(digits_package: Path) -> None:
    manifest = read_manifest(digits_package)
    quantization = manifest.quantization
    assert quantization is not None
    assert quantization["metric"] == "val_accuracy"
    assert quantization["applied"] is True, quantization["reason"]
    assert quantization["fp32_metric"] - quantization["int8_metric"] <= 0.005
    assert quantization["thresholds"] == {"max_accuracy_drop": 0.005}
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
