"""Data capture's added latency at batch 1 (issue 11): a sampled request's record vs the inference it describes.

The record goes to a real file (/dev/null), so each sampled request pays its write and flush syscall as Lambda's
stdout would. A request that is not sampled pays one random draw: measured at the catalog's rate alongside.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from bench.inputs import image_batches, text_batches
from bench.report import Measurement, Target, compare
from bench.run import Run
from bench.timing import by_step, time_side_by_side
from catalog import load_catalog
from functions.runtime.capture import Capture
from functions.runtime.models import load_model
from functions.runtime.package import load_package
from functions.runtime.settings import Settings

TARGET_MS = 0.2


def measure(run: Run) -> list[Measurement]:
    return [
        measure_model(run, "sentiment", text_batches(1, 64)),
        measure_model(run, "digits", image_batches(1, 64)),
    ]


def measure_model(run: Run, name: str, batches: list[Any]) -> Measurement:
    model = load_model(load_package(run.packages.package(name)), Settings(ort_threads=run.settings.threads))
    rate = load_catalog().model(name).monitoring.capture_rate
    step = by_step([(batch, *model.score(batch)) for batch in batches])
    always = Capture(name, model.version, model.processor, 1.0, with_inputs=False)
    at_rate = Capture(name, model.version, model.processor, rate, with_inputs=False)

    def offer(capture: Capture, index: int) -> None:
        batch, prepared, outputs = step(index)
        capture.offer(batch, prepared, outputs)

    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        timings = time_side_by_side(
            {
                "sampled": lambda index: offer(always, index),
                "catalog rate": lambda index: offer(at_rate, index),
                "inference": lambda index: model.score(step(index)[0]),
            },
            iterations=run.settings.iterations,
            warmup=run.settings.warmup,
        )
    sampled, typical, inference = timings["sampled"], timings["catalog rate"], timings["inference"]
    return compare(
        10,
        f"{name} data capture, batch 1: added latency of a sampled request (one record)",
        sampled,
        inference,
        baseline_name="the inference it records (preprocess + graph + postprocess)",
        ratio=sampled.median_ms,
        ratio_means="median ms a sampled request adds",
        target=Target("<=", TARGET_MS, " ms"),
        detail={
            "catalog_rate": rate,
            "at_catalog_rate_median_ms": typical.median_ms,
            "at_catalog_rate_mean_ms": typical.mean_ms,
            "sampled_share_of_inference": sampled.median_ms / inference.median_ms,
        },
    )
