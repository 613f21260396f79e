"""`python -m bench [--quick] [--out build/bench]`: every figure of issue 5 in one run, side by side.

Writes report.json (one entry per measurement), report.md, latency.png and placement.json under --out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.measurements import (
    batch_scaling,
    batch_throughput,
    capture,
    cold_start,
    embeddings,
    graph_export,
    image_payload,
    placement,
    realtime,
    roofline,
)
from bench.notes import standing_notes
from bench.packages import PackageSet, demo_packages, given_packages, quick_packages
from bench.peak import measure_fp32_peak
from bench.report import (
    git_revision,
    machine_description,
    machine_line,
    markdown_table,
    package_versions,
    targets_table,
    write_chart,
    write_report,
)
from bench.run import Run, SentimentContenders, Settings, log
from bench.timing import MIN_ITERATIONS, QUICK_ITERATIONS
from catalog import ROOT, load_catalog

THREADS = 2
WARMUP = 5  # untimed calls per contender before each side-by-side timing
CHART_ITERATIONS = 50  # untargeted chart points; every figure with a target gets --iterations (>= 200)
BATCH_PATH_ROWS = 20_000
QUICK_BATCH_PATH_ROWS = 128
COLD_START_REPEATS = 3
QUICK_COLD_MODELS = ("sentiment",)  # the slowest pair (torch + transformers) proves the probes; the rest cost time


def measure_all(settings: Settings, packages: PackageSet) -> Run:
    """Every measurement in report order (or those of the `--only` items): the in-process ones first, then those that
    start fresh processes."""
    run = Run(settings=settings, packages=packages)
    threads, iterations = settings.threads, settings.iterations

    def wanted(*items: int) -> bool:
        return not settings.only or bool(set(items) & set(settings.only))

    log(f"packages: {packages.origin} ({packages.models_dir}); threads {threads}; iterations {iterations}")
    contenders = SentimentContenders.load(run)
    if wanted(1, 3):
        log("items 1 + 3: handler vs PyTorch vs raw session, batch 1/8/32")
        run.add(realtime.measure(run, contenders))
    if wanted(2, 4):
        log("graph variants (plain torch.onnx.export, ours fp32, ours int8)")
        variants = contenders.graph_variants(settings)
        log("item 2: exporter comparison")
        run.add(graph_export.measure(run, contenders, variants))
        log("fp32 peak (large matmul)")
        peak = measure_fp32_peak(threads, size=1024 if settings.quick else 2048, repeats=2 if settings.quick else 5)
        log("item 4: sequence sweep, roofline, int8 vs fp32")
        run.add(roofline.measure(run, contenders, variants, peak))
    if wanted(8):
        log("item 8: embeddings vs sentence-transformers")
        run.add(embeddings.measure(run, contenders.handler))
    if wanted(10):
        log("item 10: data capture overhead, batch 1")
        run.add(capture.measure(run))
    if wanted(9):
        log("placement latencies (batch 1, every model, 2 threads then 1)")
        latencies = placement.handler_latencies(run, contenders.handler)
    checkpoint = contenders.checkpoint
    del contenders  # the fresh processes below should not share the machine with these models
    if wanted(6, 9):
        log("item 6: cold starts")
        cold_starts = cold_start.measure(run)
        run.add(cold_starts.measurements)
    if wanted(5):
        log(f"item 5: batch path ({settings.batch_rows:,} rows)")
        run.add(batch_throughput.measure(run))
        log("item 5: batch fan-out, 1 and 2 local workers")
        run.add(batch_scaling.measure(run))
    if wanted(7):
        log("item 7: payload")
        run.add(image_payload.measure(run))
    if wanted(9):
        log("item 9: placement")
        run.add(placement.measure(run, latencies, cold_starts.peak_rss_mb))
    run.notes.extend(standing_notes(quick=settings.quick, checkpoint=checkpoint))
    return run


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few iterations on tiny packages: proves the code path")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench", help="report folder (build/bench)")
    parser.add_argument("--packages", type=Path, help="a MODELS_DIR-style folder to measure instead of build/models")
    parser.add_argument("--threads", type=int, default=THREADS, help="threads for every contender (default 2)")
    parser.add_argument("--iterations", type=int, help=f"timed iterations per figure (default {MIN_ITERATIONS})")
    parser.add_argument("--batch-rows", type=int, help=f"rows in the batch-path file (default {BATCH_PATH_ROWS:,})")
    parser.add_argument("--offline", action="store_true", help="size requirements from installed metadata, not pip")
    parser.add_argument(
        "--only", type=lambda text: tuple(int(item) for item in text.split(",")), default=(),
        help="measure only these items, e.g. 1,3,5,7,8 (the figures with targets); default: all",
    )  # fmt: skip
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        out=args.out.resolve(),
        quick=args.quick,
        threads=args.threads,
        iterations=args.iterations or (QUICK_ITERATIONS if args.quick else MIN_ITERATIONS),
        chart_iterations=min(args.iterations or CHART_ITERATIONS, QUICK_ITERATIONS if args.quick else CHART_ITERATIONS),
        warmup=1 if args.quick else WARMUP,
        batch_rows=args.batch_rows or (QUICK_BATCH_PATH_ROWS if args.quick else BATCH_PATH_ROWS),
        cold_repeats=1 if args.quick else COLD_START_REPEATS,
        cold_models=QUICK_COLD_MODELS if args.quick else tuple(load_catalog().models),
        offline_payload=args.offline or args.quick,
        only=args.only,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    settings = settings_from(args)
    if not settings.quick and settings.iterations < MIN_ITERATIONS:
        print(f"note: {settings.iterations} iterations is below the issue's {MIN_ITERATIONS}", file=sys.stderr)
    started_at = datetime.now(UTC)
    machine = machine_description()
    started = time.perf_counter()
    if args.packages:
        packages = given_packages(args.packages.resolve())
    elif settings.quick:
        packages = quick_packages()
    else:
        packages = demo_packages(build_if_missing=True)
    run = measure_all(settings, packages)
    duration = time.perf_counter() - started
    command = "python -m bench" + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else "")
    run_info = {
        "command": command,
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": duration,
        "quick": settings.quick,
        "only": settings.only,
        "threads": settings.threads,
        "iterations": settings.iterations,
        "git": git_revision(ROOT),
        "machine": machine,
        "versions": package_versions(),
        "packages": {"origin": packages.origin, "models_dir": str(packages.models_dir)},
    }
    chart = write_chart(
        settings.out / "latency.png",
        run.by_batch,
        run.by_sequence,
        title=f"{machine['cpu']}, {settings.threads} threads, median of {settings.iterations} iterations",
    )
    run.sections["chart"] = str(chart)
    paths = write_report(settings.out, run.measurements, run=run_info, sections=run.sections, notes=run.notes)
    print()
    print(markdown_table(run.measurements))
    if "placement" in run.sections:
        print(run.sections["placement"]["table"])
    print(f"Machine: {machine_line(machine)}; {settings.threads} threads for every contender.\n")
    print(targets_table(run.measurements))
    missed = [m for m in run.measurements if m.met is False]
    print(f"{len(run.measurements)} measurements, {len(missed)} targets missed; {duration:.0f} s")
    print(f"wrote {paths['json']}, {paths['markdown']}, {chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
