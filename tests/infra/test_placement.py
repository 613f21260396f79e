"""`make bench` writes a placement; `cdk synth -c benchPlacement=...` sizes the Lambda functions from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.placement import ModelLatency, place_all, write_placement
from catalog import load_catalog
from stacks.config import AppConfig, read_bench_placement


def _measured(name: str, single_ms: float) -> ModelLatency:
    return ModelLatency(
        name=name,
        single_thread_median_ms=single_ms,
        single_thread_p95_ms=single_ms * 1.5,
        two_thread_median_ms=single_ms * 0.6,
        two_thread_p95_ms=single_ms,
        peak_rss_mb=120.0,
    )


@pytest.fixture
def placement_file(tmp_path: Path) -> Path:
    latencies = {name: _measured(name, 5.0) for name in ("sentiment", "embeddings", "digits")}
    return write_placement(tmp_path / "placement.json", place_all(latencies), latencies)


def test_bench_recommendation_sizes_lambda_models_only(placement_file: Path) -> None:
    catalog = load_catalog()

    memory = read_bench_placement(placement_file, catalog)

    # embeddings stays where the catalog put it (the GPU endpoint): placement never moves a model across targets
    assert set(memory) == {"sentiment", "digits"}
    config = AppConfig(catalog=catalog, lambda_memory_mb=memory)
    sentiment = catalog.model("sentiment")
    assert config.memory_mb(sentiment) == memory["sentiment"]
    assert config.memory_mb(sentiment) < sentiment.lambda_.memory_mb  # 5 ms a request needs far less than 2 GB


def test_without_placement_the_catalog_decides() -> None:
    catalog = load_catalog()
    config = AppConfig(catalog=catalog)

    assert config.memory_mb(catalog.model("digits")) == catalog.model("digits").lambda_.memory_mb


def test_missing_placement_file_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="make bench"):
        read_bench_placement(tmp_path / "placement.json", load_catalog())
