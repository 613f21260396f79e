"""`python -m bench --quick` end to end on the session's tiny real packages, so the command cannot silently break."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from catalog import ROOT, load_catalog

pytestmark = pytest.mark.slow

ITEMS = set(range(1, 11))  # issue 5 items 1-9, and 10: data capture overhead (issue 11)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_report(packages: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One quick bench run over the session packages (they share one parent folder, the MODELS_DIR layout)."""
    models_dir = {path.parent for path in packages.values()}
    assert len(models_dir) == 1
    out = tmp_path_factory.mktemp("bench")
    command = [sys.executable, "-m", "bench", "--quick", "--packages", str(models_dir.pop()), "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ}, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_report_has_an_entry_for_every_item(quick_report: Path) -> None:
    document = json.loads((quick_report / "report.json").read_text())

    assert {m["item"] for m in document["measurements"]} == ITEMS
    assert document["run"]["quick"] is True
    assert document["run"]["machine"]["logical_cpus"] >= 1
    for measurement in document["measurements"]:
        assert set(measurement) >= {"name", "median_ms", "p95_ms", "ratio", "target", "met"}


def test_ratios_are_computed_from_the_measured_medians(quick_report: Path) -> None:
    measurements = json.loads((quick_report / "report.json").read_text())["measurements"]
    # The fraction-of-peak entry compares FLOP rates (model FLOPs vs the matmul's), not two times of the same work.
    of_peak = [m for m in measurements if (m["target"] or "").endswith("of peak")]
    timed = [m for m in measurements if m not in of_peak]
    speedups = [m for m in timed if m["item"] in (1, 6, 8) or (m["item"] == 4 and m["baseline_median_ms"])]
    overheads = [m for m in measurements if m["item"] in (2, 3)]

    assert speedups
    assert overheads
    assert len(of_peak) == 1
    assert of_peak[0]["ratio"] > 0
    for m in speedups:  # baseline / ours
        assert m["ratio"] == pytest.approx(m["baseline_median_ms"] / m["median_ms"])
    for m in overheads:  # ours / baseline
        assert m["ratio"] == pytest.approx(m["median_ms"] / m["baseline_median_ms"])
    for m in (m for m in measurements if m["item"] == 10):  # data capture: the added milliseconds themselves
        assert m["ratio"] == m["median_ms"]
    for m in measurements:
        if m["median_ms"] is not None:
            assert m["median_ms"] > 0
            assert m["p95_ms"] is None or m["p95_ms"] >= m["median_ms"] or m["item"] == 9


def test_verdicts_follow_the_targets(quick_report: Path) -> None:
    for m in json.loads((quick_report / "report.json").read_text())["measurements"]:
        if m["target"] is None:
            assert m["met"] is None
            continue
        comparison, value = m["target"].split()[:2]
        bound = float(value.rstrip("x"))
        assert m["met"] is (m["ratio"] >= bound if comparison == ">=" else m["ratio"] <= bound)


def test_markdown_chart_and_placement_are_written(quick_report: Path) -> None:
    markdown = (quick_report / "report.md").read_text()
    placement = json.loads((quick_report / "placement.json").read_text())

    assert "| # | measurement |" in markdown
    assert "QUICK" in markdown
    assert (quick_report / "latency.png").read_bytes().startswith(PNG_MAGIC)
    assert set(placement["models"]) == set(load_catalog().models)
    for model in placement["models"].values():
        assert model["recommended_target"] in ("lambda", "sagemaker")
        assert (model["lambda_memory_mb"] is None) == (model["recommended_target"] == "sagemaker")
