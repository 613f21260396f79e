"""Item 5: rows/s through the local stack's S3 batch path vs raw ORT over the same rows and rows per call, and vs the
same path unbucketed (the batch path before length bucketing), on the same file.

Every side runs in one fresh `python -m bench.probes.batch_path` process (the stack, the unbucketed stack, then raw),
so none inherits another's memory, nor this process's.
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
    path, unbucketed, raw = sides["path"], sides["unbucketed"], sides["raw"]
    return [
        compare(
            5,
            f"batch path, {path['rows']:,} JSONL rows: length-bucketed vs unbucketed, same file (ms/row)",
            MedianP95(1000 / path["rows_per_s"]),
            MedianP95(1000 / unbucketed["rows_per_s"]),
            baseline_name="the same path with LENGTH_BUCKETING=false (one padded batch per chunk)",
            ratio=float(path["rows_per_s"] / unbucketed["rows_per_s"]),
            ratio_means="bucketed rows/s / unbucketed rows/s (one pass each; ms/row columns)",
            target=Target(">=", 1.5),
            headline="batch path rows/s vs the unbucketed batch path, same file",
            detail={"unbucketed": unbucketed},
        ),
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
        ),
    ]
