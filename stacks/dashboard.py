"""One CloudWatch dashboard per model: what it serves (requests, errors, latency), whether a canary is rolling back,
and whether its inputs drifted."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from functions.api.errors import CLIENT_ERRORS, SERVER_ERRORS
from stacks.config import SERVICE_NAME
from stacks.drift import drift_metric
from stacks.model_function import ModelFunction

PERIOD = Duration.minutes(1)


def model_dashboard(
    scope: Construct,
    construct_id: str,
    *,
    model: str,
    api: ModelFunction,
    canary_alarms: list[cloudwatch.IAlarm],
    drift_alarm: cloudwatch.IAlarm,
    namespace: str,
) -> cloudwatch.Dashboard:
    fn = api.function

    def answered(metric_name: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=namespace,
            metric_name=metric_name,
            dimensions_map={"model": model, "service": SERVICE_NAME},
            period=PERIOD,
            statistic="Sum",
        )

    width = 8
    return cloudwatch.Dashboard(
        scope,
        construct_id,
        widgets=[
            [
                cloudwatch.GraphWidget(
                    title=f"{model}: requests",
                    left=[fn.metric_invocations(period=PERIOD, statistic="Sum", label="invocations")],
                    width=width,
                ),
                cloudwatch.GraphWidget(
                    title=f"{model}: errors",
                    left=[
                        answered(SERVER_ERRORS).with_(label="5xx answered"),
                        answered(CLIENT_ERRORS).with_(label="4xx answered"),
                        fn.metric_errors(period=PERIOD, statistic="Sum", label="function errors"),
                        fn.metric_throttles(period=PERIOD, statistic="Sum", label="throttles"),
                    ],
                    width=width,
                ),
                cloudwatch.GraphWidget(
                    title=f"{model}: duration p50 / p99 (ms)",
                    left=[
                        fn.metric_duration(period=PERIOD, statistic="p50", label="p50"),
                        fn.metric_duration(period=PERIOD, statistic="p99", label="p99"),
                    ],
                    width=width,
                ),
            ],
            [
                cloudwatch.AlarmStatusWidget(
                    title=f"{model}: canary (alarms that roll a deploy back)", alarms=canary_alarms, width=width
                ),
                cloudwatch.GraphWidget(
                    title=f"{model}: drift (1 = drifted, daily)",
                    left=[drift_metric(namespace, model).with_(label="drift")],
                    left_annotations=[cloudwatch.HorizontalAnnotation(value=1, label="drift")],
                    width=width,
                ),
                cloudwatch.AlarmStatusWidget(title=f"{model}: drift alarm", alarms=[drift_alarm], width=width),
            ],
        ],
    )
