"""Someone is told: one encrypted alarm topic, an action on every alarm, and the alarms an operator needs."""

from __future__ import annotations

import dataclasses
import json

import pytest
from aws_cdk import App, Duration
from aws_cdk.assertions import Annotations, Match, Template

from functions.api.errors import count_error_answer
from functions.runtime.settings import Settings
from functions.runtime.telemetry import function_telemetry
from stacks.alarm_topic import AlarmTopicStack
from stacks.alarms import CLIENT_ERROR_RATE_PERCENT, latency_threshold_ms
from stacks.assembly import assemble
from stacks.config import SERVICE_NAME
from stacks.gpu_endpoint import VARIANT_NAME
from tests.infra.conftest import Synthesized, cdk_context, literal_environment
from tests.infra.test_security import NAG_RULES

# Replacing the topic drops its confirmed e-mail subscriptions: pin it.
ALARM_TOPIC_ID = "AlarmTopicD01E77F9"


def _alarms(synthesized: Synthesized, kind: str) -> list[dict]:
    return [alarm["Properties"] for alarm in synthesized.resources(kind, "AWS::CloudWatch::Alarm").values()]


def _by_metric(alarms: list[dict], metric_name: str) -> list[dict]:
    return [alarm for alarm in alarms if alarm.get("MetricName") == metric_name]


def _dimensions(alarm: dict) -> dict:
    return {dimension["Name"]: dimension["Value"] for dimension in alarm["Dimensions"]}


def test_one_topic_with_a_pinned_id_encrypted_with_a_rotating_key(synthesized: Synthesized) -> None:
    topics = synthesized.resources("alarm_topic", "AWS::SNS::Topic")
    assert set(topics) == {ALARM_TOPIC_ID}
    for kind in synthesized.templates:
        if kind != "alarm_topic":
            assert synthesized.resources(kind, "AWS::SNS::Topic") == {}, kind
    (key_id, key) = next(iter(synthesized.resources("alarm_topic", "AWS::KMS::Key").items()))
    assert key["Properties"]["EnableKeyRotation"] is True
    assert topics[ALARM_TOPIC_ID]["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}


def test_topic_takes_tls_only_and_cloudwatch_of_this_app_may_publish_and_use_the_key(
    synthesized: Synthesized,
) -> None:
    (policy,) = synthesized.resources("alarm_topic", "AWS::SNS::TopicPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
    )
    (publish,) = [s for s in statements if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert publish["Action"] == "sns:Publish"
    source_arn = json.dumps(publish["Condition"]["ArnLike"]["aws:SourceArn"])
    assert f":alarm:{synthesized.config.stack_prefix}-*" in source_arn
    assert "aws:SourceAccount" in publish["Condition"]["StringEquals"]
    (key,) = synthesized.resources("alarm_topic", "AWS::KMS::Key").values()
    (use_key,) = [
        s
        for s in key["Properties"]["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert sorted(use_key["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert use_key["Condition"] == publish["Condition"]


def test_every_alarm_in_every_stack_notifies_the_topic(synthesized: Synthesized) -> None:
    topic_stack = synthesized.stacks.alarm_topic.stack_name
    topic_outputs = synthesized.template("alarm_topic").to_json()["Outputs"]
    counted = 0
    for kind in synthesized.templates:
        for alarm in _alarms(synthesized, kind):
            (action,) = alarm["AlarmActions"]
            if kind != "alarm_topic":
                reference = action["Fn::GetStackOutput"]
                assert reference["StackName"] == topic_stack
                action = topic_outputs[reference["OutputName"]]["Value"]
            assert action == {"Ref": ALARM_TOPIC_ID}, (kind, alarm.get("AlarmDescription"))
            counted += 1
    served = len(synthesized.config.served_models)
    gpu = len(synthesized.config.sagemaker_models)
    # per API function 4 and its canary 2, the HTTP API 2, per endpoint 2, per batch dead-letter queue 1, per drift
    # check 3 (drift, a failed check, its schedule's dead-letter queue)
    assert counted == (4 + 2) * served + 2 + 2 * gpu + served + 3 * served


def test_no_email_subscription_unless_configured(synthesized: Synthesized) -> None:
    assert synthesized.config.alarm_email is None
    assert synthesized.resources("alarm_topic", "AWS::SNS::Subscription") == {}


@pytest.fixture(scope="module")
def emailed(synthesized: Synthesized, tmp_path_factory: pytest.TempPathFactory) -> AlarmTopicStack:
    """The alarm topic stack of an app assembled with an e-mail address in its config (no GPU stack: faster)."""
    config = dataclasses.replace(synthesized.config, alarm_email="oncall@example.com", gpu_endpoints=False)
    app = App(context=cdk_context(), outdir=str(tmp_path_factory.mktemp("emailed")))
    return assemble(app, config).alarm_topic


def test_alarm_email_subscribes_with_a_dead_letter_queue_that_alarms(emailed: AlarmTopicStack) -> None:
    template = Template.from_stack(emailed)
    (subscription,) = template.find_resources("AWS::SNS::Subscription").values()
    properties = subscription["Properties"]
    assert (properties["Protocol"], properties["Endpoint"]) == ("email", "oncall@example.com")
    assert properties["TopicArn"] == {"Ref": ALARM_TOPIC_ID}
    dead_letters = properties["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dead_letters, "QueueName"]}}],
            "AlarmActions": [{"Ref": ALARM_TOPIC_ID}],
        },
    )
    template.has_resource_properties("AWS::SQS::Queue", Match.object_like({"SqsManagedSseEnabled": True}))


def test_alarm_email_stack_is_nag_clean(emailed: AlarmTopicStack) -> None:
    annotations = Annotations.from_stack(emailed)
    assert annotations.find_error("*", NAG_RULES) == []
    assert annotations.find_warning("*", NAG_RULES) == []


def test_http_api_alarms_on_5xx_and_on_the_4xx_rate(synthesized: Synthesized) -> None:
    (api_id,) = synthesized.resources("api", "AWS::ApiGatewayV2::Api")
    alarms = _alarms(synthesized, "api")
    (server,) = _by_metric(alarms, "5xx")
    assert server["Namespace"] == "AWS/ApiGateway"
    assert _dimensions(server) == {"ApiId": {"Ref": api_id}}
    (rate,) = [alarm for alarm in alarms if "Metrics" in alarm]
    assert rate["Threshold"] == CLIENT_ERROR_RATE_PERCENT
    expression = next(metric["Expression"] for metric in rate["Metrics"] if "Expression" in metric)
    inputs = {
        metric["Id"]: metric["MetricStat"]["Metric"]
        for metric in rate["Metrics"]
        if "MetricStat" in metric and metric["ReturnData"] is False
    }
    assert {metric["MetricName"] for metric in inputs.values()} == {"4xx", "Count"}
    assert all(metric["Dimensions"] == [{"Name": "ApiId", "Value": {"Ref": api_id}}] for metric in inputs.values())
    counts = next(key for key, metric in inputs.items() if metric["MetricName"] == "Count")
    assert f"/ {counts}" in expression


def test_handled_server_errors_alarm_per_api_function(synthesized: Synthesized) -> None:
    server_errors = _by_metric(_alarms(synthesized, "api"), "ServerErrors")
    assert {alarm["Namespace"] for alarm in server_errors} == {synthesized.config.metrics_namespace}
    dimensions = [_dimensions(alarm) for alarm in server_errors]
    assert sorted(d["model"] for d in dimensions) == sorted(e.name for e in synthesized.config.served_models)
    assert {d["service"] for d in dimensions} == {SERVICE_NAME}
    assert all(alarm["Statistic"] == "Sum" and alarm["Threshold"] == 1 for alarm in server_errors)


def test_server_errors_alarm_watches_what_the_api_function_emits(synthesized: Synthesized) -> None:
    """The function's own telemetry, built from the environment the template gives it, counts a 502 as the very
    metric (namespace, name, dimensions) the alarm watches."""
    # given: the sentiment API function's settings, read back from its template environment
    (function,) = [
        body["Properties"]
        for body in synthesized.resources("api", "AWS::Lambda::Function").values()
        if body["Properties"]["Description"].startswith("sentiment ")
    ]
    settings = Settings.from_env(literal_environment(function))
    _, _, metrics = function_telemetry(settings)
    # when
    count_error_answer(metrics, 502, "/v2/models/sentiment/infer", {"sentiment"}, settings.service_name)
    document = metrics.serialize_metric_set()
    metrics.clear_metrics()
    # then
    (emitted,) = document["_aws"]["CloudWatchMetrics"]
    (alarm,) = [
        a for a in _by_metric(_alarms(synthesized, "api"), "ServerErrors") if _dimensions(a)["model"] == "sentiment"
    ]
    assert alarm["Namespace"] == emitted["Namespace"]
    assert [metric["Name"] for metric in emitted["Metrics"]] == [alarm["MetricName"]]
    watched = _dimensions(alarm)
    assert sorted(watched) in [sorted(names) for names in emitted["Dimensions"]]
    assert all(document[name] == value for name, value in watched.items())


def test_endpoint_alarms_on_5xx_and_model_latency(synthesized: Synthesized) -> None:
    config = synthesized.config
    (entry,) = config.sagemaker_models
    (endpoint,) = synthesized.resources("gpu", "AWS::SageMaker::Endpoint").values()
    alarms = _alarms(synthesized, "gpu")
    expected_dimensions = {
        "EndpointName": endpoint["Properties"]["EndpointName"],
        "VariantName": VARIANT_NAME,
    }
    (errors,) = _by_metric(alarms, "Invocation5XXErrors")
    (latency,) = _by_metric(alarms, "ModelLatency")
    for alarm in (errors, latency):
        assert alarm["Namespace"] == "AWS/SageMaker"
        assert _dimensions(alarm) == expected_dimensions
    assert latency["ExtendedStatistic"] == "p99"
    budget_ms = latency_threshold_ms(entry, Duration.seconds(config.catalog.platform.api_function_timeout_s))
    assert latency["Threshold"] == budget_ms * 1000  # microseconds


def test_every_dead_letter_queue_has_a_depth_alarm(synthesized: Synthesized) -> None:
    queues = synthesized.resources("batch", "AWS::SQS::Queue").values()
    dead_letter_ids = {
        q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in queues
        if "RedrivePolicy" in q["Properties"]
    }
    watched = {
        _dimensions(alarm)["QueueName"]["Fn::GetAtt"][0]
        for alarm in _by_metric(_alarms(synthesized, "batch"), "ApproximateNumberOfMessagesVisible")
        if alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    }
    assert dead_letter_ids
    assert watched == dead_letter_ids


def test_app_reads_alarm_email_from_context() -> None:
    from app import config_from

    assert config_from(App(context={"alarmEmail": " oncall@example.com "})).alarm_email == "oncall@example.com"
    assert config_from(App(context={"alarmEmail": ""})).alarm_email is None
