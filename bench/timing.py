"""Latency figures that survive a noisy shared machine: warm-up, many iterations, contenders interleaved."""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

MIN_ITERATIONS = 200  # the floor for every published latency figure
QUICK_ITERATIONS = 3


@dataclass(frozen=True)
class Timing:
    """One contender's latency distribution in milliseconds."""

    iterations: int
    median_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> Timing:
        if not samples_ms:
            raise ValueError("a timing needs at least one sample")
        values = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            iterations=len(samples_ms),
            median_ms=float(np.median(values)),
            p95_ms=float(np.percentile(values, 95)),
            mean_ms=float(values.mean()),
            min_ms=float(values.min()),
        )

    def items_per_s(self, items: int) -> float:
        return 1000.0 * items / self.median_ms


Workload = Callable[[int], object]  # called with the iteration number, so every contender sees the same input at step i
T = TypeVar("T")


def by_step(inputs: Sequence[T]) -> Callable[[int], T]:
    """Step i's input, wrapping around: a few real inputs serve any number of iterations in the same order."""
    return lambda step: inputs[step % len(inputs)]


def time_side_by_side(
    contenders: Mapping[str, Workload], *, iterations: int, warmup: int = 10, rounds: int = 4
) -> dict[str, Timing]:
    """Time contenders in alternating blocks, so a burst of load from a neighbour hits all of them alike.

    Why blocks, not call-by-call round-robin: ONNX Runtime's and PyTorch's thread pools keep spinning for tens of
    milliseconds after a call; on 2 cores the next contender's call then runs against them (measured here: raw ORT
    4.0 ms alone vs 11 ms call-interleaved with PyTorch, PyTorch 15 ms vs 55 ms). Each block starts with untimed
    calls so the previous contender's pool has gone quiet, and every contender still sees steps 0..iterations-1.
    """
    if iterations < 1:
        raise ValueError("iterations must be positive")
    rounds = max(1, min(rounds, iterations))
    bounds = [iterations * r // rounds for r in range(rounds + 1)]
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    settle = max(1, min(3, warmup))
    gc.collect()
    for block, (first, last) in enumerate(itertools.pairwise(bounds)):
        for name, run in contenders.items():
            for step in range(warmup if block == 0 else settle):
                run(step)
            for step in range(first, last):
                start = time.perf_counter_ns()
                run(step)
                samples[name].append((time.perf_counter_ns() - start) / 1e6)
    return {name: Timing.from_samples(values) for name, values in samples.items()}


def ratio_of(numerator_ms: float, denominator_ms: float) -> float:
    """A speed ratio from two measured medians; guarded so a zero never becomes infinity in the report."""
    if denominator_ms <= 0:
        raise ValueError("cannot form a ratio against a non-positive time")
    return numerator_ms / denominator_ms
