"""What pages someone: the alarms of each function, the HTTP API, each GPU endpoint and each dead-letter queue.

Every alarm created here (or anywhere in the app) is routed to the one alarm topic by `NotifyOnAlarm`.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from catalog import ModelEntry
from functions.api.errors import SERVER_ERRORS  # the metric the API emits (EMF) for each 5xx it answers
from stacks.nag import suppress

PERIOD = Duration.minutes(5)
# A canary lasts minutes: its alarms look at one-minute periods, or they could not fire before the traffic shift.
CANARY_PERIOD = Duration.minutes(1)
# A 4xx rate is noise on a quiet API (one bad probe is 100 %): it alarms only above this many requests a period.
CLIENT_ERROR_RATE_PERCENT = 25
CLIENT_ERROR_MIN_REQUESTS = 20


def alarm(
    scope: Construct,
    construct_id: str,
    metric: cloudwatch.IMetric,
    description: str,
    threshold: float = 1,
    evaluation_periods: int = 1,
) -> cloudwatch.Alarm:
    """At or above `threshold`; no data is not a breach (no traffic is not an outage)."""
    return cloudwatch.Alarm(
        scope,
        construct_id,
        metric=metric,
        threshold=threshold,
        evaluation_periods=evaluation_periods,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        alarm_description=description,
    )


def latency_threshold_ms(entry: ModelEntry, timeout: Duration) -> float:
    """Ten times the model's p95 budget, but below the caller's timeout so the alarm fires before requests fail."""
    return min(10 * entry.lambda_.p95_budget_ms, 0.8 * timeout.to_milliseconds())


def function_alarms(
    scope: Construct, fn: lambda_.IFunction, entry: ModelEntry, timeout: Duration, namespace: str, service: str
) -> None:
    """Errors, throttles, handled 5xx answers and a p99 far beyond the model's latency budget."""
    name = entry.name
    alarm(scope, "ErrorsAlarm", fn.metric_errors(period=PERIOD, statistic="Sum"), f"{name} API function raised errors")
    alarm(
        scope,
        "ThrottlesAlarm",
        fn.metric_throttles(period=PERIOD, statistic="Sum"),
        f"{name} API function was throttled (max_instances reached)",
    )
    server_errors = cloudwatch.Metric(
        namespace=namespace,
        metric_name=SERVER_ERRORS,
        dimensions_map={"model": name, "service": service},
        period=PERIOD,
        statistic="Sum",
    )
    alarm(scope, "ServerErrorsAlarm", server_errors, f"{name} API answered 5xx (handled errors: backend, internal)")
    p99_ms = latency_threshold_ms(entry, timeout)
    alarm(
        scope,
        "P99DurationAlarm",
        fn.metric_duration(period=PERIOD, statistic="p99"),
        f"{name} API p99 duration above {p99_ms:.0f} ms (10x the p95 budget)",
        threshold=p99_ms,
        evaluation_periods=3,
    )


def version_metric(
    fn: lambda_.IFunction, alias: lambda_.IAlias, version: lambda_.IVersion, metric_name: str, statistic: str
) -> cloudwatch.Metric:
    """A Lambda metric of one version as invoked through the alias (Lambda's `ExecutedVersion` dimension): during a
    canary, the new version's own errors and latency, apart from the old version's."""
    return cloudwatch.Metric(
        namespace="AWS/Lambda",
        metric_name=metric_name,
        dimensions_map={
            "FunctionName": fn.function_name,
            "Resource": f"{fn.function_name}:{alias.alias_name}",
            "ExecutedVersion": version.version,
        },
        period=CANARY_PERIOD,
        statistic=statistic,
    )


def canary_alarms(
    scope: Construct,
    fn: lambda_.IFunction,
    alias: lambda_.IAlias,
    version: lambda_.IVersion,
    entry: ModelEntry,
    timeout: Duration,
) -> list[cloudwatch.Alarm]:
    """What rolls a canary back: any error of the new version in a minute, or its p99 above the latency alarm's
    threshold for two minutes in a row."""
    name = entry.name
    errors = alarm(
        scope,
        "CanaryErrorsAlarm",
        version_metric(fn, alias, version, "Errors", "Sum"),
        f"{name}: the version deployed behind the {alias.alias_name} alias raised errors (a canary rolls back)",
    )
    p99_ms = latency_threshold_ms(entry, timeout)
    latency = alarm(
        scope,
        "CanaryP99DurationAlarm",
        version_metric(fn, alias, version, "Duration", "p99"),
        f"{name}: p99 duration of the version deployed behind the {alias.alias_name} alias above {p99_ms:.0f} ms "
        "(a canary rolls back)",
        threshold=p99_ms,
        evaluation_periods=2,
    )
    return [errors, latency]


def http_api_alarms(scope: Construct, api: apigwv2.HttpApi) -> None:
    """5xx at the edge (integration failures and timeouts included) and a high 4xx rate (a broken client or auth)."""
    server_errors = api.metric_server_error(period=PERIOD, statistic="Sum")
    alarm(scope, "ServerErrorsAlarm", server_errors, "the HTTP API answered 5xx")
    rate = cloudwatch.MathExpression(
        expression=f"IF(requests >= {CLIENT_ERROR_MIN_REQUESTS}, 100 * clientErrors / requests, 0)",
        using_metrics={
            "clientErrors": api.metric_client_error(period=PERIOD, statistic="Sum"),
            "requests": api.metric_count(period=PERIOD, statistic="Sum"),
        },
        label="4xx rate (%)",
        period=PERIOD,
    )
    alarm(
        scope,
        "ClientErrorRateAlarm",
        rate,
        f"more than {CLIENT_ERROR_RATE_PERCENT} % of HTTP API requests answered 4xx",
        threshold=CLIENT_ERROR_RATE_PERCENT,
        evaluation_periods=3,
    )


def endpoint_alarms(
    scope: Construct, entry: ModelEntry, endpoint_name: str, variant_name: str, timeout: Duration
) -> list[cloudwatch.Alarm]:
    """5xx from the model container, and a p99 model latency that would time out the front function; the endpoint's
    blue/green deployments roll back on them."""
    dimensions = {"EndpointName": endpoint_name, "VariantName": variant_name}
    errors = cloudwatch.Metric(
        namespace="AWS/SageMaker",
        metric_name="Invocation5XXErrors",
        dimensions_map=dimensions,
        period=CANARY_PERIOD,
        statistic="Sum",
    )
    latency = cloudwatch.Metric(
        namespace="AWS/SageMaker",
        metric_name="ModelLatency",
        dimensions_map=dimensions,
        period=CANARY_PERIOD,
        statistic="p99",
    )
    p99_ms = latency_threshold_ms(entry, timeout)
    return [
        alarm(scope, "Invocation5xxAlarm", errors, f"{entry.name} endpoint answered 5xx"),
        alarm(
            scope,
            "ModelLatencyAlarm",
            latency,
            f"{entry.name} endpoint p99 model latency above {p99_ms:.0f} ms",
            threshold=p99_ms * 1000,  # ModelLatency is in microseconds
            evaluation_periods=3,
        ),
    ]


def dead_letter_queue(scope: Construct, construct_id: str, description: str) -> sqs.Queue:
    """A dead-letter queue that pages on its first message: anything in it is work that failed every retry."""
    queue = sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=Duration.days(14),
    )
    depth = queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
    alarm(queue, "DepthAlarm", depth, description)
    suppress(queue, "Serverless-SQSRedrivePolicy", "this is a dead-letter queue; messages end here and raise its alarm")
    return queue
