"""The scheduled drift check (daily in AWS): each model's capture records of the last window against its reference,
published as a `Drift` metric (1 drifted, 0 not) and `DriftPsi` (the largest PSI), dimension `model`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from functions.monitoring.drift import DriftCheckError, check_drift
from functions.monitoring.records import read_capture
from functions.runtime.package import Manifest
from functions.runtime.settings import Settings
from functions.runtime.telemetry import function_telemetry

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass(frozen=True)
class MonitoringFunction:
    settings: Settings
    lambda_handler: Handler


def create_monitoring_handler(settings: Settings, manifests: Mapping[str, Manifest], s3: Any) -> MonitoringFunction:
    """`manifests`: the served packages' manifests (their references); the event may name a subset in `models`."""
    if not settings.monitoring_bucket:
        raise ValueError("the drift check needs MONITORING_BUCKET")
    bucket = settings.monitoring_bucket
    logger, _tracer, metrics = function_telemetry(settings)

    def check(name: str, until: datetime) -> dict[str, Any]:
        manifest = manifests[name]
        since = until - timedelta(hours=settings.drift_window_hours)
        records = read_capture(s3, bucket, settings.capture_prefix, name, since, until)
        result = check_drift(
            name,
            manifest.version,
            manifest.monitoring_reference,
            records,
            settings.drift_threshold_for(name),
            since,
            until,
        )
        metrics.add_dimension(name="model", value=name)
        metrics.add_metric(name="Drift", unit=MetricUnit.Count, value=int(result.drift))
        metrics.add_metric(name="DriftPsi", unit=MetricUnit.NoUnit, value=result.max_psi)
        metrics.flush_metrics()  # one EMF document per model: each carries its own `model` dimension
        logger.info("drift check", extra=result.to_document())
        return result.to_document()

    @logger.inject_lambda_context
    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        until = datetime.now(UTC)
        reports: dict[str, Any] = {}
        for name in event.get("models") or sorted(manifests):
            if name not in manifests:
                reports[name] = {"error": f"no package for {name!r} in this function"}
                continue
            try:
                reports[name] = check(name, until)
            except DriftCheckError as error:  # no traffic, or no reference: nothing to publish, nothing wrong
                logger.warning(str(error), extra={"model": name})
                reports[name] = {"error": str(error)}
        return {"reports": reports}

    return MonitoringFunction(settings=settings, lambda_handler=lambda_handler)
