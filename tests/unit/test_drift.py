"""The drift check's arithmetic and formats: PSI, reference histograms, record parsing, settings and catalog fields."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from catalog import CatalogError, load_catalog, parse_catalog
from functions.monitoring.drift import DriftCheckError, check_drift
from functions.monitoring.profile import (
    Reference,
    categorical_reference,
    numeric_reference,
    production_proportions,
    psi,
)
from functions.monitoring.records import capture_prefixes, parse_records
from functions.runtime.settings import Settings

RNG = np.random.default_rng(7)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shifted_one() -> None:
    reference = numeric_reference(RNG.normal(5, 1, 2000).tolist())
    same = production_proportions(reference, RNG.normal(5, 1, 2000).tolist())
    shifted = production_proportions(reference, RNG.normal(8, 1, 2000).tolist())
    assert psi(reference.proportions, same) < 0.05
    assert psi(reference.proportions, shifted) > 2.0


def test_decile_edges_merge_for_a_flag_and_an_unseen_value_costs_a_finite_psi() -> None:
    reference = numeric_reference([0.0] * 500)
    assert reference.edges == [0.0]
    assert reference.proportions == [1.0, 0.0]
    all_truncated = production_proportions(reference, [1.0] * 50)
    assert all_truncated == [0.0, 1.0]
    assert 5.0 < psi(reference.proportions, all_truncated) < 20.0


def test_categorical_reference_counts_labels_and_a_label_it_never_saw() -> None:
    reference = categorical_reference(["a", "a", "b", "b"], ["a", "b", "c"])
    assert reference.proportions == [0.5, 0.5, 0.0, 0.0]
    assert production_proportions(reference, ["a", "zzz"]) == [0.5, 0.0, 0.0, 0.5]


def record(version: str, **features: float) -> dict:
    return {"kind": "data_capture", "model": "m", "version": version, "time": "2026-12-01T11:00:00.000Z",
            "features": features, "prediction": {"label": "a", "score": 0.9}}  # fmt: skip


def test_check_drift_reads_only_its_own_version_and_flags_past_the_threshold() -> None:
    reference = Reference(data="test", features={"x": numeric_reference(RNG.normal(0, 1, 1000).tolist())})
    records = [record("v1", x=float(v)) for v in RNG.normal(0, 1, 300)]
    records += [record("v0", x=float(v)) for v in RNG.normal(9, 1, 300)]  # the previous version's traffic
    result = check_drift("m", "v1", reference, records, 0.2, NOW - timedelta(hours=1), NOW)
    document = result.to_document()
    assert document["window"] == {"from": "2026-12-01T11:00:00.000Z", "to": "2026-12-01T12:00:00.000Z", "records": 300}
    assert set(document) == {"model", "version", "window", "features", "drift"}
    assert document["features"]["x"]["drift"] is False
    assert document["drift"] is False
    shifted = check_drift("m", "v0", reference.model_copy(), records, 0.2, NOW - timedelta(hours=1), NOW)
    assert shifted.drift
    assert shifted.to_document()["features"]["x"]["psi"] > 0.2


def test_check_drift_refuses_a_package_without_a_reference_and_a_window_without_records() -> None:
    with pytest.raises(DriftCheckError, match="no monitoring_reference; retrain"):
        check_drift("m", "v1", None, [record("v1", x=1.0)], 0.2, NOW, NOW)
    reference = numeric_reference([1.0, 2.0])
    with pytest.raises(DriftCheckError, match="no capture records of m v1"):
        check_drift("m", "v1", Reference(data="t", features={"x": reference}), [], 0.2, NOW, NOW)


def test_records_read_plain_gzip_and_in_the_cloudwatch_logs_envelope() -> None:
    line = json.dumps(record("v1", x=1.0))
    plain = (line + "\n" + json.dumps({"kind": "other"}) + "\n").encode()
    envelope = json.dumps({"messageType": "DATA_MESSAGE", "logEvents": [{"id": "1", "message": line}]}).encode()
    assert len(list(parse_records(plain))) == 1
    assert len(list(parse_records(gzip.compress(plain)))) == 1
    assert next(iter(parse_records(envelope)))["features"] == {"x": 1.0}


def test_capture_prefixes_cover_every_day_of_the_window() -> None:
    prefixes = capture_prefixes("monitoring/capture/", "m", NOW - timedelta(days=2), NOW)
    assert prefixes == [f"monitoring/capture/m/2026-11-{day}/" for day in (29, 30)] + [
        "monitoring/capture/m/2026-12-01/"
    ]


def test_settings_carry_capture_and_drift_fields_both_ways() -> None:
    settings = Settings(
        capture_rates={"digits": 0.25},
        capture_inputs=["digits"],
        drift_thresholds={"digits": 0.3},
        monitoring_bucket="bucket",
        capture_prefix="capture",
    )
    environment = settings.to_environment()
    assert json.loads(environment["CAPTURE_RATES"]) == {"digits": 0.25}
    assert Settings.from_env(environment) == settings
    assert settings.capture_prefix == "capture/"
    assert settings.drift_threshold_for("digits") == 0.3
    assert settings.drift_threshold_for("other") == 0.2


def test_catalog_monitoring_defaults_and_the_capture_prefix_guard() -> None:
    entry = load_catalog().model("digits")
    assert (entry.monitoring.capture_rate, entry.monitoring.capture_inputs, entry.monitoring.drift_threshold) == (
        0.1,
        False,
        0.2,
    )
    document = {"models": {"digits": {"task": "image-classification", "source": "architecture:x", "dataset": "d",
                "target": "lambda", "labels": ["0", "1"]}}}  # fmt: skip
    parse_catalog({**document, "platform": {"capture_prefix": "monitoring/capture/"}})
    with pytest.raises(CatalogError, match="capture_prefix must not be under batch_input_prefix"):
        parse_catalog({**document, "platform": {"capture_prefix": "batch/input/capture/"}})
    with pytest.raises(CatalogError, match="capture_rate"):
        parse_catalog({"models": {"digits": {**document["models"]["digits"], "monitoring": {"capture_rate": 1.5}}}})
