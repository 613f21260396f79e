"""S3 -> SQS -> Lambda batch inference, built from settings, models and S3 and SQS clients: each SQS message carries
an S3 notification for a file to score, or a task of a big file fanned out over many invocations (fanout.py).

Powertools parses each message (S3 notification, s3:TestEvent or shard task), the batch processor reports failed
messages in `batchItemFailures` so only they are retried, and `score_batch_file` does the work. The Lambda deadline
bounds the lease a run holds on its input version, so a killed run blocks no retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from functions.batch.fanout import Clock, FanOut
from functions.batch.idempotency import RunInProgressError
from functions.batch.layout import BatchInputError, BatchObject
from functions.batch.notifications import BatchMessage, S3TestEvent, ShardTask
from functions.batch.scoring import Outcome, score_batch_file
from functions.runtime.models import ServedModel
from functions.runtime.settings import Settings
from functions.runtime.telemetry import function_telemetry

Handler = Callable[[dict[str, Any], Any], PartialItemFailureResponse]
SKIP_METRICS = {
    "duplicate": "DuplicatesSkipped",
    "superseded": "SupersededSkipped",
    "planned": "FilesFannedOut",
    "running": "ShardTasksDone",
}


@dataclass(frozen=True)
class BatchFunction:
    """One batch function: its settings, models, S3 client and the Lambda handler wrapping them."""

    settings: Settings
    models: Mapping[str, ServedModel]
    s3: Any
    lambda_handler: Handler


def create_batch_handler(
    settings: Settings, models: Mapping[str, ServedModel], s3: Any, sqs: Any = None
) -> BatchFunction:
    """The record handler and the decorated Lambda handler, over this function's own S3 and SQS clients (without SQS,
    or without a shard size and queue in the settings, every file is scored by one invocation)."""
    logger, tracer, metrics = function_telemetry(settings)
    processor = BatchProcessor(event_type=EventType.SQS, model=BatchMessage)

    def fan_out(lambda_context: Any) -> FanOut | None:
        if sqs is None or settings.batch_shard_bytes is None or settings.batch_queue_url is None:
            return None
        remaining_ms = lambda_context.get_remaining_time_in_millis() if lambda_context is not None else None
        clock = Clock.for_invocation(remaining_ms, settings.function_timeout_s)
        return FanOut(
            sqs, settings.batch_queue_url, settings.batch_shard_bytes, settings.batch_rows_per_inference, clock
        )

    @tracer.capture_method
    def record_handler(record: BatchMessage, lambda_context: Any = None) -> None:
        """Score every ObjectCreated object in one message; raising marks the message failed (retried, then DLQ).

        Only what a retry can fix raises (S3 or backend errors, a run in progress elsewhere); a file that can never
        be scored as it is gets a "failed" summary, and the message is deleted.
        """
        if isinstance(record.body, S3TestEvent):
            logger.info("ignoring s3:TestEvent", extra={"bucket": record.body.Bucket})
            return
        if isinstance(record.body, ShardTask):
            shards = fan_out(lambda_context)
            if shards is None:  # a task sent to a function that cannot fan out: a retry cannot help
                logger.error("a shard task reached a function without a queue to fan out to")
                return
            started = time.perf_counter()
            outcome = shards.run_task(s3, record.body, models)
            logger.info(
                "%s task: %s",
                record.body.task,
                outcome.status,
                extra={"job": record.body.job, "start": record.body.start, "end": record.body.end},
            )
            report(outcome, started)
            return
        for notification in record.body.Records:
            if not notification.eventName.startswith("ObjectCreated"):
                logger.info("ignoring %s", notification.eventName)
                continue
            s3_object = notification.s3.object
            assert s3_object is not None  # the parser requires object, size and eTag for ObjectCreated
            assert s3_object.eTag is not None
            obj = BatchObject(
                bucket=notification.s3.bucket.name,
                key=unquote_plus(s3_object.key),  # notification keys are URL-encoded (spaces as '+')
                etag=s3_object.eTag,
                size=int(s3_object.size) if s3_object.size is not None else None,
                version_id=s3_object.versionId,
            )
            logger.append_keys(input_key=obj.key, etag=obj.etag)
            if obj.is_folder_marker:
                logger.info("ignoring folder marker %s", obj.key)
                metrics.add_metric(name="FoldersIgnored", unit=MetricUnit.Count, value=1)
                continue
            score_one(obj, lambda_context)

    def score_one(obj: BatchObject, lambda_context: Any) -> None:
        started = time.perf_counter()
        remaining_ms = lambda_context.get_remaining_time_in_millis() if lambda_context is not None else None
        try:
            outcome = score_batch_file(
                s3,
                obj,
                models,
                input_prefix=settings.batch_input_prefix,
                output_prefix=settings.batch_output_prefix,
                rows_per_inference=settings.batch_rows_per_inference,
                output_bucket=settings.batch_bucket,
                lease_until=time.time() + remaining_ms / 1e3 if remaining_ms is not None else None,
                fan_out=fan_out(lambda_context),
            )
        except BatchInputError as error:  # no place in the bucket layout, so not even a summary can say why
            logger.error("refusing %s: %s", obj.key, error)
            metrics.add_metric(name="FilesRefused", unit=MetricUnit.Count, value=1)
            return
        except RunInProgressError:
            metrics.add_metric(name="RunsInProgressElsewhere", unit=MetricUnit.Count, value=1)
            raise
        report(outcome, started)

    def report(outcome: Outcome, started: float) -> None:
        if outcome.status in SKIP_METRICS:
            metrics.add_metric(name=SKIP_METRICS[outcome.status], unit=MetricUnit.Count, value=1)
            return
        summary = outcome.summary
        assert summary is not None  # scored and failed outcomes carry the summary they committed
        if outcome.status == "failed":
            metrics.add_metric(name="FilesFailed", unit=MetricUnit.Count, value=1)
            logger.warning("batch file failed for good", extra={"model": summary.model, "reason": summary.reason})
            return
        metrics.add_dimension(name="model", value=summary.model)
        metrics.add_metric(name="RowsScored", unit=MetricUnit.Count, value=summary.scored)
        metrics.add_metric(name="RowsFailed", unit=MetricUnit.Count, value=summary.failed)
        latency_ms = (time.perf_counter() - started) * 1e3
        metrics.add_metric(name="FileLatency", unit=MetricUnit.Milliseconds, value=latency_ms)
        logger.info(
            "scored batch file",
            extra={
                "model": summary.model,
                "rows": summary.rows,
                "scored": summary.scored,
                "failed": summary.failed,
                "run_id": summary.run_id,
            },
        )

    @logger.inject_lambda_context
    @tracer.capture_lambda_handler
    @metrics.log_metrics
    def lambda_handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    return BatchFunction(settings=settings, models=models, s3=s3, lambda_handler=lambda_handler)
