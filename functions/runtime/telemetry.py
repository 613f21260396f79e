"""Each function's own logger, tracer and metrics, built from its settings.

Two functions in one process (the local stack) never share log keys or metric sets. With metrics off, EMF documents
go to the debug log rather than stdout, so they return with LOG_LEVEL=DEBUG instead of cluttering a terminal.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

import orjson
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from functions.runtime.settings import Settings

emf_log = logging.getLogger("functions.metrics")

# Health and metadata requests publish no metric by design; Powertools would warn about each of them.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)


class EMFProvider(AmazonCloudWatchEMFProvider):
    """CloudWatch EMF as Powertools builds and checks it, one line per invocation, written by orjson: every API
    request pays for this flush, and the standard library's encoder is the slower one."""

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        if is_metrics_disabled():  # POWERTOOLS_METRICS_DISABLED: dropped, as Powertools would print every 100th value
            self.clear_metrics()
            return
        if not self.metric_set and not raise_on_empty_metrics:
            return  # nothing to publish (health and metadata requests)
        document = orjson.dumps(self.serialize_metric_set()).decode()  # raises SchemaValidationError when empty
        self.clear_metrics()
        self.emit(document)

    def emit(self, document: str) -> None:
        sys.stdout.write(document + "\n")  # one write: the line reaches CloudWatch whole


class DebugLogEMFProvider(EMFProvider):
    """CloudWatch EMF, written to the debug log: for runs with no CloudWatch agent reading stdout."""

    def emit(self, document: str) -> None:
        emf_log.debug("%s", document)

    def add_cold_start_metric(self, context: Any) -> None:
        emf_log.debug("cold start of %s", getattr(context, "function_name", "?"))


def function_telemetry(settings: Settings) -> tuple[Logger, Tracer, Metrics]:
    provider_class = EMFProvider if settings.metrics_enabled else DebugLogEMFProvider
    provider = provider_class(namespace=settings.metrics_namespace, service=settings.service_name)
    logger = Logger(service=settings.service_name, level=settings.log_level)
    return logger, Tracer(service=settings.service_name), Metrics(provider=provider)
