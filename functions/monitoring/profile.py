"""Distributions of what a model sees and answers, and PSI between two of them: the drift check's whole arithmetic.

A reference profile is recorded at training time (in the manifest) from the statistics the capture records carry,
so production records and the reference are binned by the very same edges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

BINS = 10  # deciles of the reference, the usual PSI setting
PROPORTION_FLOOR = 1e-4  # an empty bin counts as this share, so one unseen value costs a large but finite PSI
PREDICTION_PREFIX = "prediction."  # features named so come from the record's `prediction`, not its `features`


class Histogram(BaseModel):
    """One feature's distribution: numeric bins (-inf, e0], (e0, e1], ..., (e_last, inf), or categories."""

    model_config = ConfigDict(frozen=True, extra="allow")

    kind: Literal["numeric", "categorical"]
    edges: list[float] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    proportions: list[float]
    count: int
    mean: float | None = None
    std: float | None = None


class Reference(BaseModel):
    """The manifest's `monitoring_reference`: per feature (inputs, then `prediction.*`), the reference histogram."""

    model_config = ConfigDict(frozen=True, extra="allow")

    data: str  # which data it was profiled on, for people
    features: dict[str, Histogram]


def numeric_reference(values: Sequence[float], bins: int = BINS) -> Histogram:
    """Decile edges of the reference values (repeated edges merged: a 0/1 flag gets two bins)."""
    array = np.asarray(values, dtype=np.float64)
    edges = np.unique(np.quantile(array, np.linspace(0, 1, bins + 1)[1:-1]))
    return Histogram(
        kind="numeric",
        edges=edges.tolist(),
        proportions=_numeric_proportions(array, edges),
        count=len(array),
        mean=float(array.mean()),
        std=float(array.std()),
    )


def categorical_reference(values: Sequence[str], categories: Sequence[str]) -> Histogram:
    return Histogram(
        kind="categorical",
        categories=list(categories),
        proportions=_categorical_proportions(values, categories),
        count=len(values),
    )


def _numeric_proportions(values: np.ndarray, edges: np.ndarray) -> list[float]:
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return (counts / max(len(values), 1)).tolist()


def _categorical_proportions(values: Sequence[str], categories: Sequence[str]) -> list[float]:
    index = {category: i for i, category in enumerate(categories)}
    counts = np.zeros(len(categories) + 1)  # the last bin: a value the reference never produced
    for value in values:
        counts[index.get(value, len(categories))] += 1
    return (counts / max(len(values), 1)).tolist()


def production_proportions(reference: Histogram, values: Sequence[Any]) -> list[float]:
    """The production values binned as the reference is (categorical: one extra bin for unseen values)."""
    if reference.kind == "numeric":
        return _numeric_proportions(np.asarray(values, dtype=np.float64), np.asarray(reference.edges))
    return _categorical_proportions([str(value) for value in values], reference.categories)


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index: sum over bins of (actual - expected) * ln(actual / expected)."""
    size = max(len(expected), len(actual))
    e = np.maximum(np.pad(np.asarray(expected, dtype=np.float64), (0, size - len(expected))), PROPORTION_FLOOR)
    a = np.maximum(np.pad(np.asarray(actual, dtype=np.float64), (0, size - len(actual))), PROPORTION_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def feature_values(records: Iterable[Mapping[str, Any]], name: str) -> list[Any]:
    """One feature's values across capture records (`prediction.label` reads the record's prediction)."""
    if name.startswith(PREDICTION_PREFIX):
        key = name.removeprefix(PREDICTION_PREFIX)
        return [record["prediction"][key] for record in records if key in record.get("prediction", {})]
    return [record["features"][name] for record in records if name in record.get("features", {})]
