"""The drift check: capture records against the manifest's reference, PSI per feature, drift past a threshold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from functions.monitoring.profile import Reference, feature_values, production_proportions, psi
from functions.runtime.capture import utc_timestamp


class DriftCheckError(ValueError):
    """A check that cannot run (no reference, no records); the message says what to do."""


@dataclass(frozen=True)
class FeatureDrift:
    psi: float
    threshold: float
    reference: list[float]  # the proportions compared, kept for the chart
    production: list[float]

    @property
    def drift(self) -> bool:
        return self.psi > self.threshold


@dataclass(frozen=True)
class DriftResult:
    model: str
    version: str
    since: datetime
    until: datetime
    records: int
    features: dict[str, FeatureDrift]

    @property
    def drift(self) -> bool:
        return any(feature.drift for feature in self.features.values())

    @property
    def max_psi(self) -> float:
        return max(feature.psi for feature in self.features.values())

    def to_document(self) -> dict[str, Any]:
        """drift.json, as the README and the issue give it."""
        return {
            "model": self.model,
            "version": self.version,
            "window": {"from": utc_timestamp(self.since), "to": utc_timestamp(self.until), "records": self.records},
            "features": {
                name: {"psi": round(feature.psi, 4), "threshold": feature.threshold, "drift": feature.drift}
                for name, feature in self.features.items()
            },
            "drift": self.drift,
        }


def check_drift(
    model: str,
    version: str,
    reference: Reference | None,
    records: Sequence[Mapping[str, Any]],
    threshold: float,
    since: datetime,
    until: datetime,
) -> DriftResult:
    """PSI of each reference feature over the records of this version (another version's traffic is not its own)."""
    if reference is None:
        raise DriftCheckError(
            f"the {model} package {version} records no monitoring_reference; retrain it (training.submit --force)"
        )
    own = [record for record in records if record.get("version") == version]
    if not own:
        window = f"from {utc_timestamp(since)} to {utc_timestamp(until)}"
        raise DriftCheckError(f"no capture records of {model} {version} {window}")
    features = {}
    for name, histogram in reference.features.items():
        production = production_proportions(histogram, feature_values(own, name))
        expected = histogram.proportions
        features[name] = FeatureDrift(psi(expected, production), threshold, expected, production)
    return DriftResult(model, version, since, until, len(own), features)
