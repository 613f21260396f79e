"""Each function's own logger, tracer and metrics, built from its settings.

Two functions in one process (the local stack) never share log keys or metric sets. With metrics off, EMF documents
go to the debug log rather than stdout, so they return with LOG_LEVEL=DEBUG instead of cluttering a terminal.
"""

from __future__ import annotations

import json
import logging
import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from functions.runtime.settings import Settings

emf_log = logging.getLogger("functions.metrics")

# Health and metadata requests publish no metric by design; Powertools would warn about each of them.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)


class DebugLogEMFProvider(AmazonCloudWatchEMFProvider):
    """CloudWatch EMF, written to the debug log: for runs with no CloudWatch agent reading stdout."""

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        if self.metric_set:
            emf_log.debug("%s", json.dumps(self.serialize_metric_set(), separators=(",", ":")))
        self.clear_metrics()

    def add_cold_start_metric(self, context: Any) -> None:
        emf_log.debug("cold start of %s", getattr(context, "function_name", "?"))


def function_telemetry(settings: Settings) -> tuple[Logger, Tracer, Metrics]:
    provider_class = AmazonCloudWatchEMFProvider if settings.metrics_enabled else DebugLogEMFProvider
    provider = provider_class(namespace=settings.metrics_namespace, service=settings.service_name)
    logger = Logger(service=settings.service_name, level=settings.log_level)
    return logger, Tracer(service=settings.service_name), Metrics(provider=provider)
