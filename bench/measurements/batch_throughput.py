"""Item 5: rows/s through the local stack's S3 batch path vs raw ORT over the same rows and rows per call.

Both sides run in one fresh `python -m bench.probes.batch_path` process (stack first, then raw), so neither inherits
the other's memory, nor this process's.
"""

from __future__ import annotations

from bench.probes.fresh_process import run_probe
from bench.report import Measurement, MedianP95, Target, compare
from bench.run import Run
from catalog import load_catalog


def measure(run: Run) -> list[Measurement]:
    rows_per_call = load_catalog().platform.batch_rows_per_inference
    package, rows, threads = run.packages.package("sentiment"), run.settings.batch_rows, run.settings.threads
    sides = run_probe("batch_path", [str(package), str(rows), str(threads), str(rows_per_call)])
    path, raw = sides["path"], sides["raw"]
    return [
        compare(
            5,
            f"batch path, {path['rows']:,} JSONL rows: S3 → SQS → handler → S3 vs raw ORT (ms/row)",
            MedianP95(1000 / path["rows_per_s"]),
            MedianP95(1000 / raw["rows_per_s"]),
            baseline_name=f"raw ORT, tokenise + session.run, {rows_per_call} rows per call",
            ratio=float(path["rows_per_s"] / raw["rows_per_s"]),
            ratio_means="batch-path rows/s / raw rows/s (one pass each; ms/row columns)",
            target=Target(">=", 0.8),
            detail={"path": path, "raw": raw},
        )
    ]
