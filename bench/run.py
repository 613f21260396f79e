"""What one bench run shares: its settings, what it has found so far, and the in-process contenders items 1-4 use."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.contenders import ApiHandler, TorchTextClassifier, find_checkpoint, raw_session, tokenize
from bench.graphs import GraphVariants, build_variants
from bench.inputs import text_batches
from bench.packages import PackageSet
from bench.report import Measurement
from functions.runtime.package import TOKENIZER_FILE, Manifest, read_manifest


@dataclass(frozen=True)
class Settings:
    """One run's knobs, all from the command line."""

    out: Path
    quick: bool
    threads: int
    iterations: int
    chart_iterations: int  # for points without a target (batch 8/32 of items 1/3, the shorter sequences)
    warmup: int
    batch_rows: int
    cold_repeats: int
    cold_models: tuple[str, ...]
    offline_payload: bool
    only: tuple[int, ...] = ()  # items to measure (--only); empty: every item


@dataclass
class Run:
    """What the measurements add up as they go: rows of the table, extra sections of the JSON, notes, chart series."""

    settings: Settings
    packages: PackageSet
    measurements: list[Measurement] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    by_batch: dict[str, dict[int, float]] = field(default_factory=dict)
    by_sequence: dict[str, dict[int, float]] = field(default_factory=dict)

    def add(self, measurements: Iterable[Measurement]) -> None:
        for measurement in measurements:
            self.measurements.append(measurement)
            met = {True: "met", False: "MISSED", None: "info"}[measurement.met]
            ratio = f"{measurement.ratio:.2f}" if measurement.ratio is not None else "-"
            target = measurement.target or ""
            print(f"  [{measurement.item}] {measurement.name}: ratio {ratio} {target} {met}", flush=True)


def log(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def text_max_length(manifest: Manifest) -> int:
    """The token limit a text package was trained and exported with."""
    if manifest.preprocessing.max_length is None:
        raise ValueError(f"{manifest.name}: a text package without preprocessing.max_length")
    return manifest.preprocessing.max_length


def _weights_key(checkpoint: Path | None) -> str:
    if checkpoint is None:
        return "base"
    stat = checkpoint.stat()
    return hashlib.sha256(f"{checkpoint.resolve()}:{stat.st_mtime_ns}:{stat.st_size}".encode()).hexdigest()[:16]


@dataclass
class SentimentContenders:
    """The sentiment model three ways (API handler, raw session on the shipped graph, eager PyTorch), loaded once.

    The handler also serves items 8 and 9; all of it is dropped before the fresh-process measurements start.
    """

    package: Path
    manifest: Manifest
    checkpoint: Path | None  # the training job's checkpoint the PyTorch side loads, if still there
    torch_model: TorchTextClassifier
    handler: ApiHandler
    session: Any

    @classmethod
    def load(cls, run: Run) -> SentimentContenders:
        threads, package = run.settings.threads, run.packages.package("sentiment")
        manifest = read_manifest(package)
        checkpoint = find_checkpoint(package, run.packages.work_dirs)
        log(f"loading contenders (PyTorch weights: {checkpoint or 'base + head'})")
        torch_model = TorchTextClassifier.build(len(manifest.labels), text_max_length(manifest), threads, checkpoint)
        handler = ApiHandler(run.packages.models_dir, threads)
        session = raw_session(package / manifest.graph.file, threads)
        return cls(package, manifest, checkpoint, torch_model, handler, session)

    def graph_variants(self, settings: Settings) -> GraphVariants:
        """Plain export, our fp32 and our int8 graph of the PyTorch side's module, cached per weights."""
        example = tokenize(self.package / TOKENIZER_FILE, 128, list(text_batches(2, 1)[0]))
        return build_variants(
            self.torch_model.model,
            example,
            settings.out / "graphs" / (_weights_key(self.checkpoint) + ("-quick" if settings.quick else "")),
            plain_dynamo=False if settings.quick else None,
        )
