"""The daily drift check of one model: its image's drift handler, on a schedule, alarming when it reports drift."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_s3 as s3
from constructs import Construct

from catalog import ModelEntry
from stacks.alarms import alarm, dead_letter_queue
from stacks.config import DRIFT_HANDLER, SERVICE_NAME, AppConfig
from stacks.model_function import ModelFunction
from stacks.nag import suppress, suppress_prefix_grants

# The metric the drift handler (functions/monitoring/app.py) publishes per model: 1 drifted, 0 not.
DRIFT_METRIC = "Drift"
DRIFT_TIMEOUT_S = 900  # a day of records is read and binned in one invocation
DRIFT_MEMORY_MB = 2048
# 03:00 UTC: a whole day of capture has been delivered (Firehose buffers at most five minutes).
DRIFT_SCHEDULE = events.Schedule.cron(minute="0", hour="3")


def drift_metric(namespace: str, model: str) -> cloudwatch.Metric:
    """Daily, like the check: a drift keeps the alarm on until the next check says otherwise."""
    return cloudwatch.Metric(
        namespace=namespace,
        metric_name=DRIFT_METRIC,
        dimensions_map={"model": model, "service": SERVICE_NAME},
        period=Duration.days(1),
        statistic="Maximum",
    )


class DriftCheck(Construct):
    """Reads this model's capture records and nothing else in the bucket; compares them with the reference in the
    manifest of the package its image carries (the version being served)."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: AppConfig, entry: ModelEntry, bucket: s3.IBucket
    ) -> None:
        super().__init__(scope, construct_id)
        platform = config.catalog.platform
        capture = f"{platform.capture_prefix}{entry.name}/"
        self.function = ModelFunction(
            self,
            "Check",
            config=config,
            entry=entry,
            handler=DRIFT_HANDLER,
            memory_mb=DRIFT_MEMORY_MB,
            settings=config.function_settings(
                entry,
                DRIFT_TIMEOUT_S,
                monitoring_bucket=bucket.bucket_name,
                capture_prefix=platform.capture_prefix,
                drift_thresholds={entry.name: entry.monitoring.drift_threshold},
            ),
            no_dead_letter_reason="run by a daily schedule: a failed check raises its errors alarm, and the next "
            "day's check reads the same records again",
        )
        bucket.grant_read(self.function.role, f"{capture}*")
        suppress_prefix_grants(
            self.function.role, bucket, [f"{capture}*"], f"the drift check reads {entry.name}'s capture records only"
        )
        undelivered = dead_letter_queue(self, "Undelivered", f"the daily drift check of {entry.name} could not start")
        suppress(
            undelivered,
            "AwsSolutions-SQS3",
            "this is the schedule target's dead-letter queue (events EventBridge could not deliver), which the rule "
            "does not recognise as one",
        )
        self.rule = events.Rule(
            self,
            "Daily",
            schedule=DRIFT_SCHEDULE,
            description=f"daily drift check of {entry.name}",
            targets=[
                targets.LambdaFunction(
                    self.function.alias,
                    event=events.RuleTargetInput.from_object({"models": [entry.name]}),
                    retry_attempts=2,
                    dead_letter_queue=undelivered,
                )
            ],
        )
        self.errors_alarm = alarm(
            self,
            "FailedAlarm",
            self.function.function.metric_errors(period=Duration.days(1), statistic="Sum"),
            f"the drift check of {entry.name} failed (no Drift figure today)",
        )
        self.drift_alarm = alarm(
            self,
            "DriftAlarm",
            drift_metric(config.metrics_namespace, entry.name),
            f"{entry.name}: production inputs or predictions drifted from the training reference "
            "(python -m monitoring drift for the figures)",
        )
