"""drift.png: per feature, the reference's share of each bin next to production's, PSI in the title."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the object API renders with Agg and never needs a display (no pyplot)

from functions.monitoring.drift import DriftResult
from functions.monitoring.profile import Histogram

COLUMNS = 2


def bin_labels(histogram: Histogram, bins: int) -> list[str]:
    if histogram.kind == "categorical":
        return [*histogram.categories, "other"][:bins]
    edges = histogram.edges
    return [f"≤{edges[0]:.3g}", *(f"≤{edge:.3g}" for edge in edges[1:]), f">{edges[-1]:.3g}"][:bins]


def plot_drift(result: DriftResult, histograms: dict[str, Histogram], path: Path) -> Path:
    rows = math.ceil(len(result.features) / COLUMNS)
    figure = Figure(figsize=(6 * COLUMNS, 3.2 * rows))
    axes = figure.subplots(rows, COLUMNS, squeeze=False).ravel()
    for axis, (name, feature) in zip(axes, result.features.items(), strict=False):
        bins = len(feature.production)
        reference = np.pad(feature.reference, (0, bins - len(feature.reference)))
        positions = np.arange(bins)
        axis.bar(positions - 0.2, reference, width=0.4, label="reference (training)")
        axis.bar(positions + 0.2, feature.production, width=0.4, label="production")
        axis.set_xticks(positions, bin_labels(histograms[name], bins), rotation=45, fontsize=7)
        verdict = "DRIFT" if feature.drift else "ok"
        axis.set_title(f"{name}: PSI {feature.psi:.3f} (threshold {feature.threshold:g}) {verdict}", fontsize=9)
        axis.set_ylabel("share")
    for axis in axes[len(result.features) :]:
        axis.set_visible(False)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{result.model} {result.version}: {result.records} records")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
