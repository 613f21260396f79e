"""Item 5, fan-out: rows/s of one big file with 1 and then 2 local batch workers (one onnxruntime thread each, as
concurrent Lambda sandboxes each have CPUs of their own), each run in a fresh `python -m bench.probes.batch_fanout`
process; plus every line once, the longest invocation against the timeout, and each worker's peak RSS."""

from __future__ import annotations

from bench.probes.fresh_process import run_probe
from bench.report import Measurement, MedianP95, Target, compare
from bench.run import Run

FULL = ("sentiment", 4_000, 32 * 1024)  # about 110 rows a shard: every worker has many shards to take
QUICK = ("digits", 1_500, 16 * 1024)


def measure(run: Run) -> list[Measurement]:
    model, rows, shard_bytes = QUICK if run.settings.quick else FULL
    package = run.packages.package(model)
    one, two = (
        run_probe("batch_fanout", [model, str(package), str(rows), str(workers), "1", str(shard_bytes)])
        for workers in (1, 2)
    )
    for side in (one, two):
        if side["lost"] or side["duplicated"] or side["status"] != "complete":
            raise RuntimeError(f"the fanned-out file did not come back whole: {side}")
    return [
        compare(
            5,
            f"batch fan-out, {rows:,} {model} rows in {two['shards']} shards: 2 workers vs 1 (ms/row)",
            MedianP95(1000 / two["rows_per_s"]),
            MedianP95(1000 / one["rows_per_s"]),
            baseline_name="1 worker, same file and shards",
            ratio=two["rows_per_s"] / one["rows_per_s"],
            ratio_means="rows/s with 2 workers / rows/s with 1 (one pass each; ms/row columns)",
            target=Target(">=", 1.6),
            detail={
                "one_worker": one,
                "two_workers": two,
                # contention-proof: the work per row must not grow with workers (then rows/s scales with free cores)
                "cpu_per_row_ratio": two["workers_cpu_ms_per_row"] / one["workers_cpu_ms_per_row"],
            },
        )
    ]
