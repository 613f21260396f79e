"""The bench's arithmetic: timing statistics, interleaving, targets, FLOP counting, placement and cost formulas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from bench import placement
from bench.peak import matmul_flops
from bench.report import Measurement, MedianP95, Target, compare, markdown_table, targets_table, write_report
from bench.timing import Timing, by_step, time_side_by_side
from catalog import load_catalog


def test_timing_statistics_come_from_the_samples() -> None:
    samples = [5.0, 1.0, 3.0, 2.0, 4.0, 100.0]

    timing = Timing.from_samples(samples)

    assert timing.iterations == len(samples)
    assert timing.median_ms == pytest.approx(float(np.median(samples)))
    assert timing.p95_ms == pytest.approx(float(np.percentile(samples, 95)))
    assert timing.min_ms == min(samples)
    assert timing.items_per_s(8) == pytest.approx(8000 / timing.median_ms)


def test_timing_refuses_an_empty_sample() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        Timing.from_samples([])


def test_contenders_are_timed_in_alternating_blocks_over_the_same_steps() -> None:
    # given two contenders that record which step they ran
    calls: list[tuple[str, int]] = []
    contenders = {"a": lambda step: calls.append(("a", step)), "b": lambda step: calls.append(("b", step))}

    # when: 4 steps in 2 rounds, with 2 warm-up calls in the first block and 2 settling calls in later ones
    timings = time_side_by_side(contenders, iterations=4, warmup=2, rounds=2)

    # then each block runs one contender alone, and both see steps 0..3 exactly once when timed
    assert calls == [
        ("a", 0), ("a", 1), ("a", 0), ("a", 1),
        ("b", 0), ("b", 1), ("b", 0), ("b", 1),
        ("a", 0), ("a", 1), ("a", 2), ("a", 3),
        ("b", 0), ("b", 1), ("b", 2), ("b", 3),
    ]  # fmt: skip
    assert {name: t.iterations for name, t in timings.items()} == {"a": 4, "b": 4}


@pytest.mark.parametrize(
    ("comparison", "value", "ratio", "met"),
    [(">=", 3.0, 3.5, True), (">=", 3.0, 2.9, False), ("<=", 1.2, 1.1, True), ("<=", 1.2, 1.3, False)],
)
def test_met_follows_from_the_ratio_and_target(comparison: str, value: float, ratio: float, met: bool) -> None:
    measurement = Measurement(
        item=1,
        name="x",
        median_ms=1.0,
        p95_ms=2.0,
        ratio=ratio,
        target=Target(comparison, value),  # type: ignore[arg-type]
    )

    assert measurement.met is met
    assert measurement.to_json()["met"] is met
    assert measurement.to_json()["target"] == f"{comparison} {value:g}x"


def test_a_measurement_without_target_has_no_verdict() -> None:
    assert Measurement(item=1, name="x", median_ms=1.0, p95_ms=1.0, ratio=2.0, target=None).met is None


def test_compare_forms_the_ratio_from_the_two_medians_in_the_direction_asked() -> None:
    ours, baseline = Timing.from_samples([2.0, 2.0, 4.0]), MedianP95(median_ms=8.0, p95_ms=9.0)

    speed_up = compare(1, "x", ours, baseline, baseline_name="b", ratio="baseline / ours", ratio_means="b / ours")
    overhead = compare(3, "y", ours, baseline, baseline_name="b", ratio="ours / baseline", ratio_means="ours / b")

    assert speed_up.ratio == pytest.approx(4.0)
    assert overhead.ratio == pytest.approx(0.25)
    assert (speed_up.median_ms, speed_up.p95_ms) == (ours.median_ms, ours.p95_ms)
    assert (speed_up.baseline, speed_up.baseline_median_ms, speed_up.baseline_p95_ms) == ("b", 8.0, 9.0)
    assert speed_up.ratio_means == "b / ours"
    assert speed_up.target is None
    assert speed_up.detail == {}


def test_compare_keeps_a_given_ratio_and_leaves_absent_figures_empty() -> None:
    measurement = compare(7, "payload", None, ratio=0.5, ratio_means="MB / limit", target=Target("<=", 1.0))

    assert measurement.to_json() == {
        "item": 7,
        "name": "payload",
        "median_ms": None,
        "p95_ms": None,
        "ratio": 0.5,
        "target": "<= 1x",
        "baseline": None,
        "baseline_median_ms": None,
        "baseline_p95_ms": None,
        "ratio_means": "MB / limit",
        "headline": None,
        "detail": {},
        "met": True,
    }


def test_compare_refuses_a_ratio_of_medians_without_both_figures() -> None:
    with pytest.raises(ValueError, match="needs both figures"):
        compare(1, "x", MedianP95(1.0), ratio="baseline / ours", ratio_means="")


def test_inputs_repeat_in_order_by_step() -> None:
    input_of = by_step(["a", "b", "c"])

    assert [input_of(step) for step in range(5)] == ["a", "b", "c", "a", "b"]


def test_report_files_hold_every_measurement(tmp_path: Path) -> None:
    measurements = [
        Measurement(item=1, name="fast", median_ms=1.0, p95_ms=1.5, ratio=4.0, target=Target(">=", 3.0)),
        Measurement(item=3, name="slow", median_ms=2.0, p95_ms=2.5, ratio=1.5, target=Target("<=", 1.2)),
    ]
    run = {
        "command": "python -m bench",
        "started_at": "2026-11-23T10:00:00+00:00",
        "git": "abc",
        "duration_s": 1.0,
        "quick": True,
        "threads": 2,
        "machine": {"cpu": "cpu", "logical_cpus": 2, "simd": ["avx2"], "memory_gib": 1, "load_average_1m_at_start": 0},
    }

    paths = write_report(tmp_path, measurements, run=run, sections={}, notes=["a note"])

    document = json.loads(paths["json"].read_text())
    assert [m["met"] for m in document["measurements"]] == [True, False]
    markdown = paths["markdown"].read_text()
    assert markdown_table(measurements) in markdown
    assert "| **no** |" in markdown
    assert "a note" in markdown
    assert "Machine: cpu, 2 logical CPUs (avx2), 1 GiB" in markdown


def test_the_targets_table_holds_each_headline_beside_its_target() -> None:
    measurements = [
        compare(1, "b1", None, ratio=3.6, ratio_means="x", target=Target(">=", 3.5), headline="handler vs PyTorch"),
        compare(7, "payload", None, ratio=262.0, ratio_means="MB", target=Target("<=", 250, " MB"), headline="payload"),
        compare(2, "not a headline", None, ratio=0.5, ratio_means="x", target=Target("<=", 1.0)),
    ]

    table = targets_table(measurements)

    assert "| handler vs PyTorch | 3.60x | >= 3.5x | met |" in table
    assert "| payload | 262.00 MB | <= 250 MB | **missed** |" in table
    assert "not a headline" not in table


def _matmul_graph(path: Path) -> Path:
    """x[b, s, 8] @ W[8, 16] then Gemm with W2[16, 4] on a [s, 16] view: shapes only known once b, s are fixed."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 16], np.zeros(128, dtype=np.float32).tolist())
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [16, 4], np.zeros(64, dtype=np.float32).tolist())
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 16])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Reshape", ["h", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[w, w2, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_flops_count_every_matmul_at_the_fixed_shape(tmp_path: Path) -> None:
    graph = _matmul_graph(tmp_path / "g.onnx")
    batch, sequence = 3, 5

    flops = matmul_flops(graph, {"x": [batch, sequence, 8]})

    assert flops == 2 * batch * sequence * 8 * 16 + 2 * (batch * sequence) * 16 * 4


def test_latency_stretches_below_one_vcpu_and_reaches_the_two_thread_figure() -> None:
    single, double = 10.0, 6.0

    assert placement.predicted_latency_ms(placement.FULL_VCPU_MB, single, double) == pytest.approx(single)
    assert placement.predicted_latency_ms(placement.FULL_VCPU_MB // 2, single, double) == pytest.approx(
        single * placement.FULL_VCPU_MB / (placement.FULL_VCPU_MB // 2)
    )
    assert placement.predicted_latency_ms(2 * placement.FULL_VCPU_MB, single, double) == pytest.approx(double)


def test_lambda_cost_is_duration_plus_requests_plus_http_api() -> None:
    prices = placement.PRICES
    expected = (
        1e6 * (1024 / 1024) * 0.010 * prices["lambda_x86_gb_second_usd"]
        + prices["lambda_request_usd_per_million"]
        + prices["http_api_request_usd_per_million"]
    )

    assert placement.lambda_usd_per_million(1024, 9.2) == pytest.approx(expected)  # billed per started ms: 10 ms


def _latency(name: str, single_p95: float, rss: float = 200.0) -> placement.ModelLatency:
    return placement.ModelLatency(name, single_p95 * 0.8, single_p95, single_p95 * 0.5, single_p95 * 0.6, rss)


def test_placement_picks_the_smallest_memory_that_meets_the_budget() -> None:
    entry = load_catalog().model("sentiment")
    single_p95 = entry.lambda_.p95_budget_ms / 2  # meets the budget from half a vCPU on

    chosen = placement.place(entry, _latency("sentiment", single_p95), throttle_rate=100)

    assert chosen.recommended_target == "lambda"
    assert chosen.lambda_memory_mb is not None
    smaller = [m for m in placement.LAMBDA_MEMORY_STEPS_MB if m < chosen.lambda_memory_mb]
    assert all(
        placement.predicted_latency_ms(m, single_p95, single_p95 * 0.6) > entry.lambda_.p95_budget_ms
        or m < 200.0 * placement.MEMORY_HEADROOM
        for m in smaller
    )
    assert chosen.lambda_option is not None
    assert chosen.lambda_option.predicted_p95_ms <= entry.lambda_.p95_budget_ms


def test_placement_falls_back_to_the_gpu_endpoint_when_no_lambda_size_is_fast_enough() -> None:
    entry = load_catalog().model("sentiment")

    chosen = placement.place(entry, _latency("sentiment", entry.lambda_.p95_budget_ms * 10), throttle_rate=100)

    assert chosen.recommended_target == "sagemaker"
    assert chosen.lambda_memory_mb is None
    hourly = placement.PRICES["sagemaker_realtime_hourly_usd"][entry.sagemaker.instance_type]
    assert chosen.sagemaker_usd_per_million_at_throttle_rate == pytest.approx(
        round(hourly * entry.sagemaker.initial_instance_count / (100 * 3600) * 1e6 + 1.0, 2)
    )


def test_placement_file_is_json_with_every_model(tmp_path: Path) -> None:
    latencies = {name: _latency(name, 5.0) for name in load_catalog().models}

    path = placement.write_placement(tmp_path / "placement.json", placement.place_all(latencies), latencies)

    document = json.loads(path.read_text())
    assert set(document["models"]) == set(load_catalog().models)
    assert all(m["recommended_target"] in ("lambda", "sagemaker") for m in document["models"].values())
    assert document["prices"]["checked_on"]
