"""The reference a drift check compares against: the served pipeline run over training data, profiled as capture does.

Training calls `profile_package` on the package it is about to write, so the reference's statistics come from the
same tokenizer, the same preprocessing and the same shipped graph that serve, through the code that captures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from functions.monitoring.profile import PREDICTION_PREFIX, Reference, categorical_reference, numeric_reference
from functions.runtime.backends import OnnxBackend
from functions.runtime.capture import capture_records
from functions.runtime.models import ServedModel
from functions.runtime.package import Manifest, ModelPackage
from functions.runtime.session import create_session
from functions.runtime.tasks import processor_for

PROFILE_BATCH = 64
MAX_INSTANCES = 1000  # deciles of 1,000 values move by ~0.01 PSI between samples; the tweet corpus has 30,000


def profile_package(path: Path, manifest: Manifest, instances: Sequence[Any], data: str, threads: int = 1) -> Reference:
    """Run `instances` (API-level: texts, raw pixel arrays) through the package at `path` and profile what capture
    would record; the package need not be written yet (its manifest comes from the caller). More than MAX_INSTANCES
    are thinned to an evenly spaced MAX_INSTANCES."""
    if len(instances) > MAX_INSTANCES:
        instances = [instances[round(i * len(instances) / MAX_INSTANCES)] for i in range(MAX_INSTANCES)]
    package = ModelPackage(path=Path(path), manifest=manifest)
    processor = processor_for(package)
    session = create_session(package.graph_path, threads)
    model = ServedModel(package, processor, OnnxBackend(session, processor.graph_output_names))
    records = []
    for start in range(0, len(instances), PROFILE_BATCH):
        batch = processor.stack(list(instances[start : start + PROFILE_BATCH]))
        prepared, outputs = model.score(batch)
        records.extend(capture_records(processor, prepared, outputs))
    return reference_of(records, manifest.labels, data)


def reference_of(
    records: Sequence[tuple[dict[str, float], dict[str, Any]]], labels: Sequence[str], data: str
) -> Reference:
    """Decile histograms of each numeric feature and prediction score; the label's share of each class."""
    if not records:
        raise ValueError("a reference needs at least one instance")
    features = {name: numeric_reference([row[name] for row, _ in records]) for name in records[0][0]}
    for name, value in records[0][1].items():
        values = [prediction[name] for _, prediction in records]
        features[PREDICTION_PREFIX + name] = (
            categorical_reference(values, labels) if isinstance(value, str) else numeric_reference(values)
        )
    return Reference(data=data, features=features)
