"""Item 6, per model: a fresh process from interpreter start to first prediction, ours vs PyTorch, with the breakdown.

Each probe is a new `python -m bench.probes.cold_start` process; the wall time seen from here covers interpreter
start, and the median over alternating repeats is the figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.contenders import find_checkpoint
from bench.inputs import test_digits, test_texts
from bench.probes.fresh_process import run_probe
from bench.report import Measurement, MedianP95, Target, compare
from bench.run import Run
from functions.runtime.package import Manifest, read_manifest
from functions.runtime.task_registry import Task

PYTORCH_BASELINE = {Task.SENTENCE_EMBEDDING: "sentence-transformers", Task.IMAGE_CLASSIFICATION: "PyTorch CNN"}


@dataclass(frozen=True)
class ColdStarts:
    measurements: list[Measurement]
    peak_rss_mb: dict[str, float]  # ours, per model probed: what placement sizes Lambda memory by


def example_request(task: Task) -> dict[str, Any]:
    """One real request (a test tweet or a test digit), made here so probes import no data code."""
    if task == Task.IMAGE_CLASSIFICATION:
        return {"pixels": test_digits()[:1].tolist()}
    return {"text": [test_texts()[0]]}


def pytorch_settings(manifest: Manifest) -> dict[str, Any]:
    """What a PyTorch container is configured with for this model (the probe reads nothing of our package format)."""
    return {
        "task": manifest.task.value,
        "num_labels": len(manifest.labels),
        "max_length": manifest.preprocessing.max_length or 128,
        "pixel_scale": manifest.preprocessing.pixel_scale,
    }


def _timed_probe(
    kind: str, package_dir: Path, threads: int, given: dict[str, Any], checkpoint: Path | None
) -> dict[str, Any]:
    """One fresh process; wall time seen from here (interpreter start included), steps and peak RSS from inside."""
    args = [kind, str(package_dir), str(threads), *([str(checkpoint)] if checkpoint else [])]
    started = time.perf_counter()
    result = run_probe("cold_start", args, given)
    result["wall_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def measure(run: Run) -> ColdStarts:
    measurements: list[Measurement] = []
    rss: dict[str, float] = {}
    breakdown: dict[str, Any] = {}
    threads = run.settings.threads
    for name in run.settings.cold_models:
        package = run.packages.package(name)
        manifest = read_manifest(package)
        given = {"request": example_request(manifest.task), "pytorch": pytorch_settings(manifest)}
        checkpoint = find_checkpoint(package, run.packages.work_dirs)
        probes: dict[str, list[dict[str, Any]]] = {"onnx": [], "torch": []}
        for _ in range(run.settings.cold_repeats):  # alternate, so a burst of load hits both sides
            probes["onnx"].append(_timed_probe("onnx", package, threads, given, None))
            probes["torch"].append(_timed_probe("torch", package, threads, given, checkpoint))
        walls = {kind: sorted(p["wall_ms"] for p in results) for kind, results in probes.items()}
        ours, theirs = float(np.median(walls["onnx"])), float(np.median(walls["torch"]))
        median_probe = {
            kind: min(results, key=lambda p, k=kind: abs(p["wall_ms"] - float(np.median(walls[k]))))
            for kind, results in probes.items()
        }
        rss[name] = max(p["peak_rss_mb"] for p in probes["onnx"])
        breakdown[name] = {kind: {**median_probe[kind], "walls_ms": walls[kind]} for kind in probes}
        measurements.append(
            compare(
                6,
                f"cold start {name}: fresh process to first prediction (ours: ORT runtime)",
                MedianP95(ours, max(walls["onnx"])),
                MedianP95(theirs, max(walls["torch"])),
                baseline_name=f"{PYTORCH_BASELINE.get(manifest.task, 'PyTorch + transformers')} loading the checkpoint",
                ratio="baseline / ours",
                ratio_means="PyTorch median / ours median (speed-up); p95 column = worst of the repeats",
                target=Target(">=", 3.0),
                detail={
                    "repeats": run.settings.cold_repeats,
                    "ours_steps_ms": median_probe["onnx"]["steps_ms"],
                    "pytorch_steps_ms": median_probe["torch"]["steps_ms"],
                    "ours_peak_rss_mb": rss[name],
                    "pytorch_peak_rss_mb": max(p["peak_rss_mb"] for p in probes["torch"]),
                    "pytorch_weights": "fine-tuned checkpoint" if checkpoint else "base weights (no checkpoint)",
                },
            )
        )
    run.sections["cold_start"] = breakdown
    return ColdStarts(measurements, rss)
