"""What one bench run found, in three forms: JSON for machines, a Markdown table for the README, a PNG chart."""

from __future__ import annotations

import json
import operator
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from bench.timing import ratio_of

Comparison = Literal[">=", "<="]
_COMPARE = {">=": operator.ge, "<=": operator.le}
RatioOf = Literal["baseline / ours", "ours / baseline"]  # speed-up, or overhead (lower is better)


@dataclass(frozen=True)
class Target:
    """A pass line for a ratio, e.g. `>= 3.0` (speed-up) or `<= 1.2` (overhead)."""

    comparison: Comparison
    value: float
    unit: str = "x"

    def met_by(self, ratio: float) -> bool:
        return bool(_COMPARE[self.comparison](ratio, self.value))

    def __str__(self) -> str:
        return f"{self.comparison} {self.value:g}{self.unit}"


@dataclass(frozen=True)
class Measurement:
    """One row of the report: our figure, the baseline's, the ratio between them and whether the target holds.

    Built by `compare`, which forms `ratio` from the measured figures; `met` follows from it, never set.
    """

    item: int  # the numbered item (1..9)
    name: str
    median_ms: float | None
    p95_ms: float | None
    ratio: float | None
    target: Target | None
    baseline: str | None = None
    baseline_median_ms: float | None = None
    baseline_p95_ms: float | None = None
    ratio_means: str = ""  # how the ratio reads, e.g. "PyTorch median / handler median"
    headline: str | None = None  # its line in the targets table (the figures the performance issues set targets for)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.target.met_by(self.ratio)

    def to_json(self) -> dict[str, Any]:
        entry = asdict(self)
        entry["target"] = str(self.target) if self.target else None
        entry["met"] = self.met
        return entry


class Figure(Protocol):
    """A median and a p95 in milliseconds: a `Timing`, or a `MedianP95` for figures measured some other way."""

    @property
    def median_ms(self) -> float: ...

    @property
    def p95_ms(self) -> float | None: ...


@dataclass(frozen=True)
class MedianP95:
    median_ms: float
    p95_ms: float | None = None


def compare(
    item: int,
    name: str,
    ours: Figure | None,
    baseline: Figure | None = None,
    *,
    baseline_name: str | None = None,
    ratio: RatioOf | float | None,
    ratio_means: str,
    target: Target | None = None,
    headline: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Measurement:
    """One report row: ours vs the baseline vs the target, the ratio formed from the two medians unless given."""
    if isinstance(ratio, str):
        if ours is None or baseline is None:
            raise ValueError(f"{name}: a ratio of medians needs both figures")
        ours_ms, baseline_ms = ours.median_ms, baseline.median_ms
        ratio = ratio_of(baseline_ms, ours_ms) if ratio == "baseline / ours" else ratio_of(ours_ms, baseline_ms)
    return Measurement(
        item=item,
        name=name,
        median_ms=ours.median_ms if ours else None,
        p95_ms=ours.p95_ms if ours else None,
        ratio=ratio,
        target=target,
        baseline=baseline_name,
        baseline_median_ms=baseline.median_ms if baseline else None,
        baseline_p95_ms=baseline.p95_ms if baseline else None,
        ratio_means=ratio_means,
        headline=headline,
        detail=detail or {},
    )


def machine_description() -> dict[str, Any]:
    """What the figures were measured on; absolute times mean nothing without it."""
    model_name = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
        wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
        simd = [flag for flag in wanted if f" {flag}" in flags]
    except (OSError, StopIteration):
        simd = []
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {
        "cpu": model_name,
        "logical_cpus": os.cpu_count(),
        "simd": simd,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "load_average_1m_at_start": round(load, 2),
    }


VERSIONED = ("onnxruntime", "torch", "transformers", "sentence-transformers", "tokenizers", "numpy")


def package_versions(names: tuple[str, ...] = VERSIONED) -> dict[str, str]:
    from importlib import metadata

    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision(root: Path) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def markdown_table(measurements: list[Measurement]) -> str:
    header = (
        "| # | measurement | ours median | ours p95 | baseline | baseline median | baseline p95 "
        "| ratio | target | met |\n"
        "|---|---|---:|---:|---|---:|---:|---:|---|:---:|\n"
    )
    rows = []
    for m in measurements:
        met = {True: "yes", False: "**no**", None: "-"}[m.met]
        rows.append(
            f"| {m.item} | {m.name} | {_fmt(m.median_ms)} | {_fmt(m.p95_ms)} | {m.baseline or '-'} "
            f"| {_fmt(m.baseline_median_ms)} | {_fmt(m.baseline_p95_ms)} | {_fmt(m.ratio)} "
            f"| {m.target or '-'} | {met} |"
        )
    return header + "\n".join(rows) + "\n"


def targets_table(measurements: list[Measurement]) -> str:
    """The headline figures, each beside its target: what `make bench` is judged by, in one glance."""
    rows = [
        f"| {m.headline} | {_fmt(m.ratio)}{m.target.unit} | {m.target} | {'met' if m.met else '**missed**'} |"
        for m in measurements
        if m.headline and m.target and m.ratio is not None
    ]
    return "| measurement | result | target | met |\n|---|---:|---|:---:|\n" + "\n".join(rows) + "\n"


def machine_line(machine: dict[str, Any]) -> str:
    """CPU model, logical CPUs and ISA flags: the int8 and fp32 ratios depend on them."""
    flags = ", ".join(machine["simd"]) or "no AVX2"
    return f"{machine['cpu']}, {machine['logical_cpus']} logical CPUs ({flags}), {machine['memory_gib']} GiB"


def write_report(
    out_dir: Path,
    measurements: list[Measurement],
    *,
    run: dict[str, Any],
    sections: dict[str, Any],
    notes: list[str],
) -> dict[str, Path]:
    """Write report.json and report.md; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {"run": run, "measurements": [m.to_json() for m in measurements], **sections, "notes": notes}
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(document, indent=2, default=_json_default) + "\n")
    machine = run["machine"]
    lines = [
        "# Benchmark report",
        "",
        f"`{run['command']}` at {run['started_at']} (git {run['git']}), {run['duration_s']:.0f} s, "
        f"{'QUICK (few iterations; figures are not meaningful)' if run['quick'] else 'full run'}.",
        "",
        f"Machine: {machine_line(machine)}, load average {machine['load_average_1m_at_start']} at start; "
        f"{run['threads']} threads for every contender. Times in ms; ratios are what count.",
        "",
        "## Targets",
        "",
        targets_table(measurements),
        "## Every measurement",
        "",
        markdown_table(measurements),
    ]
    if notes:
        lines += ["", "Notes:", "", *[f"- {note}" for note in notes], ""]
    markdown_path = out_dir / "report.md"
    markdown_path.write_text("\n".join(lines))
    return {"json": json_path, "markdown": markdown_path}


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()  # numpy scalars
    raise TypeError(f"cannot serialise {type(value).__name__}")


def write_chart(
    path: Path,
    by_batch: dict[str, dict[int, float]],
    by_sequence: dict[str, dict[int, float]],
    *,
    title: str,
) -> Path:
    """Median latency by batch size and by sequence length, one line per contender (log-scaled y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, series, xlabel in ((left, by_batch, "batch size"), (right, by_sequence, "sequence length (tokens)")):
        for label, points in series.items():
            xs = sorted(points)
            axis.plot(xs, [points[x] for x in xs], marker="o", label=label)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel(xlabel)
        axis.set_ylabel("median latency (ms)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    left.set_title("sentiment, real test tweets, by batch size")
    right.set_title("sentiment graph, batch 1, by sequence length")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
