"""Item 9: where each model should run, from its batch-1 handler latency and its cold-start RSS.

The latencies are taken while the in-process handler is loaded (`handler_latencies`), the recommendation once the
cold starts have measured memory (`measure`); placement.json is written where `cdk synth` reads it.
"""

from __future__ import annotations

from typing import Any

from bench import placement
from bench.contenders import ApiHandler, infer_event
from bench.inputs import image_batches, text_batches
from bench.report import Measurement, MedianP95, Target, compare
from bench.run import Run
from bench.timing import Timing, by_step, time_side_by_side
from catalog import load_catalog
from functions.runtime.task_registry import Task


def _model_requests(name: str, task: Task, count: int) -> list[dict[str, Any]]:
    if task is Task.IMAGE_CLASSIFICATION:
        return [infer_event(name, "pixels", images, "FP32") for images in image_batches(1, count)]
    return [infer_event(name, "text", texts, "BYTES") for texts in text_batches(1, count)]


def handler_latencies(run: Run, handler: ApiHandler) -> dict[str, dict[str, Timing]]:
    """Batch-1 handler latency of every model, at the run's threads ("multi") and at one ("single", Lambda < 1 vCPU)."""
    count = min(run.settings.iterations, 64)
    request_of = {
        name: by_step(_model_requests(name, entry.task, count)) for name, entry in load_catalog().models.items()
    }
    results: dict[str, dict[str, Timing]] = {}
    for threads, label in ((run.settings.threads, "multi"), (1, "single")):
        if threads != handler.threads:
            handler = ApiHandler(run.packages.models_dir, threads)
        timings = time_side_by_side(
            {name: (lambda step, r=request, h=handler: h(r(step))) for name, request in request_of.items()},
            iterations=run.settings.iterations,
            warmup=run.settings.warmup,
        )
        for name, timing in timings.items():
            results.setdefault(name, {})[label] = timing
    return results


def measure(run: Run, latencies: dict[str, dict[str, Timing]], peak_rss_mb: dict[str, float]) -> list[Measurement]:
    measured = {
        name: placement.ModelLatency(
            name=name,
            single_thread_median_ms=t["single"].median_ms,
            single_thread_p95_ms=t["single"].p95_ms,
            two_thread_median_ms=t["multi"].median_ms,
            two_thread_p95_ms=t["multi"].p95_ms,
            # --quick probes one model's cold start; the others borrow its RSS
            peak_rss_mb=peak_rss_mb.get(name, max(peak_rss_mb.values())),
        )
        for name, t in latencies.items()
    }
    placements = placement.place_all(measured)
    path = placement.write_placement(run.settings.out / "placement.json", placements, measured)
    run.sections["placement"] = {"file": str(path), "table": placement.placement_table(placements)}
    measurements = []
    for p in placements:
        chosen = p.lambda_option
        measurements.append(
            compare(
                9,
                f"placement {p.name}: {p.recommended_target}"
                + (f" {chosen.memory_mb} MB" if chosen else f" {p.sagemaker_instance_type}"),
                MedianP95(chosen.predicted_median_ms, chosen.predicted_p95_ms) if chosen else None,
                baseline_name=f"p95 budget {p.p95_budget_ms:g} ms",
                ratio=(chosen.predicted_p95_ms / p.p95_budget_ms) if chosen else None,
                ratio_means="predicted p95 at the chosen memory / budget",
                target=Target("<=", 1.0) if chosen else None,
                detail={
                    "usd_per_million_lambda": chosen.usd_per_million if chosen else None,
                    "usd_per_million_gpu_at_throttle_rate": p.sagemaker_usd_per_million_at_throttle_rate,
                    "reason": p.reason,
                },
            )
        )
    return measurements
