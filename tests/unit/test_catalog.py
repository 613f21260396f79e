"""The catalog is the one source for training, serving and stacks: a bad entry must fail naming the model and field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from catalog import CATALOG_PATH, CatalogError, Target, Task, load_catalog, parse_catalog


def _shipped() -> dict:
    return tomllib.loads(CATALOG_PATH.read_text())


def test_shipped_catalog_declares_the_three_models_on_both_serving_paths() -> None:
    catalog = load_catalog()

    assert set(catalog.models) == {"sentiment", "embeddings", "digits"}
    assert catalog.model("sentiment").task is Task.TEXT_CLASSIFICATION
    assert catalog.model("embeddings").task is Task.SENTENCE_EMBEDDING
    assert catalog.model("digits").task is Task.IMAGE_CLASSIFICATION
    assert {entry.name for entry in catalog.on(Target.LAMBDA)} == {"sentiment", "digits"}
    assert {entry.name for entry in catalog.on(Target.SAGEMAKER)} == {"embeddings"}


def test_demo_profile_overrides_only_what_it_names() -> None:
    sentiment = load_catalog().model("sentiment")

    demo = sentiment.hyperparameters_for("demo")
    full = sentiment.hyperparameters_for("full")

    assert demo["max_steps"] == sentiment.demo_hyperparameters["max_steps"]
    assert "max_steps" not in full
    assert demo["learning_rate"] == full["learning_rate"]


def test_queue_visibility_is_six_times_the_batch_function_timeout() -> None:
    platform = load_catalog().platform

    assert platform.queue_visibility_timeout_s == 6 * platform.batch_function_timeout_s
    assert not platform.batch_output_prefix.startswith(platform.batch_input_prefix)


@pytest.mark.parametrize(
    ("model", "field", "value", "expected"),
    [
        ("digits", "target", "kubernetes", "model 'digits': field target"),
        ("sentiment", "task", "translation", "model 'sentiment': field task"),
        ("embeddings", "source", "hub:foo", "model 'embeddings': field source"),
        ("sentiment", "labels", ["only-one"], "model 'sentiment'"),
        ("digits", "max_instances", 0, "model 'digits': field max_instances"),
        ("digits", "colour", "blue", "model 'digits': field colour"),
    ],
)
def test_bad_entry_names_the_model_and_field(model: str, field: str, value: object, expected: str) -> None:
    document = _shipped()
    document["models"][model][field] = value

    with pytest.raises(CatalogError, match=expected):
        parse_catalog(document)


def test_bad_nested_placement_names_the_path() -> None:
    document = _shipped()
    document["models"]["sentiment"]["lambda"]["architecture"] = "sparc"

    with pytest.raises(CatalogError, match=r"model 'sentiment': field lambda\.architecture"):
        parse_catalog(document)


@pytest.mark.parametrize(("percent", "minutes"), [(60, 5), (0, 5), (10, 0)])
def test_a_canary_takes_at_most_half_the_traffic_for_at_least_a_minute(percent: int, minutes: int) -> None:
    """SageMaker wants a canary of at most half the new fleet; CodeDeploy needs a whole number of minutes."""
    document = _shipped()
    document["models"]["digits"]["canary"] = {"percent": percent, "minutes": minutes}

    with pytest.raises(CatalogError, match=r"model 'digits': field canary\.(percent|minutes)"):
        parse_catalog(document)


def test_api_timeout_must_stay_below_the_http_api_limit() -> None:
    document = _shipped()
    document["platform"]["api_function_timeout_s"] = 30

    with pytest.raises(CatalogError, match="api_function_timeout_s"):
        parse_catalog(document)


def test_output_prefix_under_input_prefix_is_refused() -> None:
    document = _shipped()
    document["platform"]["batch_output_prefix"] = "batch/input/results/"

    with pytest.raises(CatalogError, match="batch_output_prefix"):
        parse_catalog(document)


def test_unknown_model_lookup_lists_the_known_ones() -> None:
    with pytest.raises(CatalogError, match=r"no model named 'gpt'.*sentiment"):
        load_catalog().model("gpt")


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "models.toml"
    broken.write_text("[models.sentiment\n")

    with pytest.raises(CatalogError, match="not valid TOML"):
        load_catalog(broken)
