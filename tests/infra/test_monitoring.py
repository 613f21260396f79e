"""Monitoring stack: capture lines leave each API function through its log group (subscription filter -> Firehose ->
S3, nothing synchronous on the request path), a daily drift check per model, and a dashboard per model."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template
from aws_lambda_powertools.metrics import MetricUnit

from functions.runtime.settings import Settings
from functions.runtime.telemetry import function_telemetry
from stacks.capture import CAPTURE_KIND, CaptureStream
from stacks.config import API_HANDLER, DRIFT_HANDLER, SERVICE_NAME
from stacks.drift import DRIFT_METRIC
from tests.infra.conftest import Synthesized, cdk_context, literal_environment, resolve_outputs
from tests.infra.test_artifacts import ARTIFACT_BUCKET_ID

BUCKET_ARN = {"Fn::GetAtt": [ARTIFACT_BUCKET_ID, "Arn"]}


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [value]


def s3_grants(statements: Iterable[dict], bucket_arn: object) -> set[tuple[str, str]]:
    """(action, what it reaches) for every s3 action: "" for the bucket itself, "/<pattern>" for its objects."""
    grants = set()
    for statement in statements:
        for action in (a for a in _as_list(statement["Action"]) if a.startswith("s3:")):
            for resource in _as_list(statement["Resource"]):
                if resource == bucket_arn:
                    grants.add((action, ""))
                elif "Fn::Join" in resource and resource["Fn::Join"][1][0] == bucket_arn:
                    grants.add((action, "".join(resource["Fn::Join"][1][1:])))
                else:
                    grants.add((action, json.dumps(resource)))  # anything else (another bucket, "*") shows up
    return grants


def objects_outside(grants: set[tuple[str, str]], prefixes: Iterable[str]) -> set[tuple[str, str]]:
    """The object grants that reach beyond `prefixes` (a bucket-wide `/*` among them)."""
    allowed = {f"/{prefix}*" for prefix in prefixes}
    return {(action, target) for action, target in grants if target and target not in allowed}


def _role_statements(template: Mapping[str, Any], role_id: str) -> list[dict]:
    return [
        statement
        for body in template["Resources"].values()
        if body["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in body["Properties"]["Roles"]
        for statement in body["Properties"]["PolicyDocument"]["Statement"]
    ]


def _monitoring(synthesized: Synthesized) -> dict:
    return resolve_outputs(synthesized, synthesized.template("monitoring").to_json())  # type: ignore[return-value]


def _streams(template: dict) -> dict[str, dict]:
    """Model -> its delivery stream's S3 destination (the model is the prefix's last folder)."""
    streams = {}
    for logical_id, body in template["Resources"].items():
        if body["Type"] == "AWS::KinesisFirehose::DeliveryStream":
            destination = body["Properties"]["ExtendedS3DestinationConfiguration"]
            streams[destination["Prefix"].split("/")[2]] = {"id": logical_id, **body["Properties"], **destination}
    return streams


def test_every_served_models_capture_lines_reach_its_own_dated_prefix(synthesized: Synthesized) -> None:
    platform = synthesized.config.catalog.platform
    streams = _streams(_monitoring(synthesized))
    assert set(streams) == {entry.name for entry in synthesized.config.served_models}
    for name, stream in streams.items():
        assert stream["Prefix"] == f"{platform.capture_prefix}{name}/!{{timestamp:yyyy-MM-dd}}/"
        errors = stream["ErrorOutputPrefix"]
        assert errors.startswith(f"{platform.capture_prefix.rstrip('/')}-errors/{name}/")
        assert not errors.startswith(platform.capture_prefix)  # the drift check never reads a failed record
        assert stream["DeliveryStreamType"] == "DirectPut"
        assert stream["DeliveryStreamEncryptionConfigurationInput"] == {"KeyType": "AWS_OWNED_CMK"}
        assert stream["BucketARN"] == BUCKET_ARN
        # CloudWatch Logs delivers gzip batches in an envelope: unpacked to one log line a record
        assert [processor["Type"] for processor in stream["ProcessingConfiguration"]["Processors"]] == [
            "Decompression",
            "CloudWatchLogProcessing",
            "AppendDelimiterToRecord",
        ]
        assert stream["CompressionFormat"] == "GZIP"
        assert stream["BufferingHints"]["IntervalInSeconds"] <= 300


def test_subscription_filters_pass_only_capture_lines_of_each_api_log_group(synthesized: Synthesized) -> None:
    template = _monitoring(synthesized)
    streams = {stream["id"]: name for name, stream in _streams(template).items()}
    api = synthesized.template("api").to_json()["Resources"]
    api_log_groups = {
        body["Properties"]["Description"].split(" ")[0]: body["Properties"]["LoggingConfig"]["LogGroup"]
        for body in api.values()
        if body["Type"] == "AWS::Lambda::Function"
    }
    filters = [b["Properties"] for b in template["Resources"].values() if b["Type"] == "AWS::Logs::SubscriptionFilter"]
    assert len(filters) == len(api_log_groups)
    for subscription in filters:
        name = streams[subscription["DestinationArn"]["Fn::GetAtt"][0]]
        assert subscription["LogGroupName"] == api_log_groups[name]
        assert subscription["FilterPattern"] == f'{{ $.kind = "{CAPTURE_KIND}" }}'


def test_cloudwatch_logs_may_put_into_its_models_stream_only_for_that_log_group(synthesized: Synthesized) -> None:
    template = _monitoring(synthesized)
    resources = template["Resources"]
    for subscription in (b["Properties"] for b in resources.values() if b["Type"] == "AWS::Logs::SubscriptionFilter"):
        role_id = subscription["RoleArn"]["Fn::GetAtt"][0]
        (trust,) = resources[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "logs.amazonaws.com"}
        source = json.dumps(trust["Condition"]["StringLike"]["aws:SourceArn"])
        assert json.dumps(subscription["LogGroupName"]) in source
        (statement,) = _role_statements(template, role_id)
        assert sorted(_as_list(statement["Action"])) == ["firehose:PutRecord", "firehose:PutRecordBatch"]
        assert statement["Resource"] == subscription["DestinationArn"]


def test_firehose_writes_only_its_models_capture_prefixes(synthesized: Synthesized) -> None:
    platform = synthesized.config.catalog.platform
    template = _monitoring(synthesized)
    for name, stream in _streams(template).items():
        role_id = stream["RoleARN"]["Fn::GetAtt"][0]
        (trust,) = template["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "firehose.amazonaws.com"}
        assert "aws:SourceAccount" in trust["Condition"]["StringEquals"]
        data, errors = f"{platform.capture_prefix}{name}/", f"{platform.capture_prefix.rstrip('/')}-errors/{name}/"
        grants = s3_grants(_role_statements(template, role_id), BUCKET_ARN)
        assert grants == {
            *(
                (action, f"/{prefix}*")
                for action in ("s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject")
                for prefix in (data, errors)
            ),
            ("s3:GetBucketLocation", ""),
            ("s3:ListBucket", ""),
            ("s3:ListBucketMultipartUploads", ""),
        }
        assert objects_outside(grants, [data, errors]) == set()


def test_a_bucket_wide_grant_to_the_delivery_role_fails_the_scope_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other way round: without the grant-ignoring view of the role, Firehose's L2 destination grants read-write
    on the whole bucket, and the check used above reports it."""
    # given: a role whose `without_policy_updates` view is the role itself
    monkeypatch.setattr(iam.Role, "without_policy_updates", lambda role: role)
    stack = Stack(App(context=cdk_context()), "Broad")
    bucket = s3.Bucket(stack, "Bucket")
    capture = CaptureStream(
        stack,
        "Capture",
        model="digits",
        bucket=bucket,
        capture_prefix="monitoring/capture/",
        source=logs.LogGroup(stack, "Source"),
        log_retention_days=30,
    )
    # when
    template = Template.from_stack(stack).to_json()
    role_id = stack.resolve(stack.get_logical_id(capture.delivery_role.node.default_child))  # type: ignore[arg-type]
    bucket_arn = {"Fn::GetAtt": [stack.resolve(stack.get_logical_id(bucket.node.default_child)), "Arn"]}  # type: ignore[arg-type]
    grants = s3_grants(_role_statements(template, role_id), bucket_arn)
    # then
    broad = objects_outside(grants, [capture.data_prefix, capture.errors_prefix])
    assert ("s3:PutObject", "/*") in broad
    assert ("s3:DeleteObject*", "/*") in broad


def _drift_functions(synthesized: Synthesized) -> dict[str, tuple[str, dict]]:
    return {
        body["Properties"]["Description"].split(" ")[0]: (logical_id, body["Properties"])
        for logical_id, body in synthesized.resources("monitoring", "AWS::Lambda::Function").items()
        if body["Properties"].get("ImageConfig", {}).get("Command") == [DRIFT_HANDLER]
    }


def test_drift_check_runs_daily_from_the_models_own_image(synthesized: Synthesized) -> None:
    platform = synthesized.config.catalog.platform
    template = _monitoring(synthesized)
    resources = template["Resources"]
    functions = _drift_functions(synthesized)
    api_images = {
        body["Properties"]["Description"].split(" ")[0]: body["Properties"]["Code"]["ImageUri"]
        for body in synthesized.resources("api", "AWS::Lambda::Function").values()
    }
    assert set(functions) == {entry.name for entry in synthesized.config.served_models}
    rules = [body["Properties"] for body in resources.values() if body["Type"] == "AWS::Events::Rule"]
    assert len(rules) == len(functions)
    aliases = {
        logical_id: body["Properties"]["FunctionName"]["Ref"]
        for logical_id, body in resources.items()
        if body["Type"] == "AWS::Lambda::Alias"
    }
    for rule in rules:
        assert rule["ScheduleExpression"] == "cron(0 3 * * ? *)"
        (target,) = rule["Targets"]
        (name,) = json.loads(target["Input"])["models"]
        function_id, function = functions[name]
        assert aliases[target["Arn"]["Ref"]] == function_id
        assert "DeadLetterConfig" in target
        assert function["Code"]["ImageUri"] == api_images[name]  # no image of its own to build
        settings = Settings.from_env(literal_environment(function))
        assert settings.capture_prefix == platform.capture_prefix
        assert settings.metrics_namespace == synthesized.config.metrics_namespace
        assert settings.drift_threshold_for(name) == synthesized.config.catalog.model(name).monitoring.drift_threshold
        assert name in settings.drift_thresholds  # the catalog's threshold, not the runtime's default
        assert "MONITORING_BUCKET" in function["Environment"]["Variables"]
    assert API_HANDLER not in json.dumps([f["ImageConfig"] for _, f in functions.values()])


def test_drift_check_reads_its_models_capture_records_and_nothing_else(synthesized: Synthesized) -> None:
    platform = synthesized.config.catalog.platform
    template = _monitoring(synthesized)
    for name, (_, function) in _drift_functions(synthesized).items():
        role_id = function["Role"]["Fn::GetAtt"][0]
        grants = s3_grants(_role_statements(template, role_id), BUCKET_ARN)
        capture = f"{platform.capture_prefix}{name}/"
        assert objects_outside(grants, [capture]) == set()
        assert {action for action, target in grants if target} == {"s3:GetObject*", "s3:GetBucket*", "s3:List*"}
        assert not [action for action, _ in grants if action.startswith(("s3:Put", "s3:Delete"))]


def test_drift_alarm_per_model_on_the_metric_the_check_publishes(synthesized: Synthesized) -> None:
    alarms = [
        body["Properties"]
        for body in synthesized.resources("monitoring", "AWS::CloudWatch::Alarm").values()
        if body["Properties"].get("MetricName") == DRIFT_METRIC
    ]
    assert sorted({d["Name"]: d["Value"] for d in a["Dimensions"]}["model"] for a in alarms) == sorted(
        entry.name for entry in synthesized.config.served_models
    )
    for alarm in alarms:
        assert alarm["Namespace"] == synthesized.config.metrics_namespace
        assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]}["service"] == SERVICE_NAME
        assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"]) == ("Maximum", 86400, 1)
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["TreatMissingData"] == "notBreaching"


def test_one_dashboard_per_model_with_traffic_latency_canary_and_drift(synthesized: Synthesized) -> None:
    template = _monitoring(synthesized)
    api = synthesized.template("api").to_json()["Resources"]
    dashboards = [
        b["Properties"]["DashboardBody"]
        for b in template["Resources"].values()
        if b["Type"] == "AWS::CloudWatch::Dashboard"
    ]
    assert len(dashboards) == len(synthesized.config.served_models)
    for entry in synthesized.config.served_models:
        (body,) = [b for b in dashboards if f'"title\\":\\"{entry.name}: requests' in json.dumps(b)]
        text = json.dumps(body)
        for metric in ("Invocations", "Errors", "ServerErrors", "Throttles", DRIFT_METRIC):
            assert f'\\"{metric}\\"' in text, (entry.name, metric)
        assert '\\"stat\\":\\"p50\\"' in text
        assert '\\"stat\\":\\"p99\\"' in text
        canary_alarms = {
            part["Fn::GetAtt"][0]
            for part in body["Fn::Join"][1]
            if isinstance(part, dict) and "Fn::GetAtt" in part and part["Fn::GetAtt"][0] in api
        }
        assert {api[alarm]["Properties"]["MetricName"] for alarm in canary_alarms} == {"Errors", "Duration"}
        assert all("ExecutedVersion" in json.dumps(api[alarm]) for alarm in canary_alarms)


def test_drift_alarm_watches_the_metric_the_drift_functions_telemetry_emits(synthesized: Synthesized) -> None:
    """The drift function's own Powertools metrics, built from the environment the template gives it, emit `Drift`
    with a `model` dimension (as functions/monitoring/app.py does) in the namespace and dimensions the alarm
    watches: the namespace and the `service` dimension come from the template, not from the handler."""
    # given: the digits drift function's settings, read back from its template environment
    _, function = _drift_functions(synthesized)["digits"]
    settings = Settings.from_env(literal_environment(function))
    _, _, metrics = function_telemetry(settings)
    # when
    metrics.add_dimension(name="model", value="digits")
    metrics.add_metric(name=DRIFT_METRIC, unit=MetricUnit.Count, value=1)
    document = metrics.serialize_metric_set()
    metrics.clear_metrics()
    # then
    (emitted,) = document["_aws"]["CloudWatchMetrics"]
    (alarm,) = [
        body["Properties"]
        for body in synthesized.resources("monitoring", "AWS::CloudWatch::Alarm").values()
        if body["Properties"].get("MetricName") == DRIFT_METRIC
        and {"Name": "model", "Value": "digits"} in body["Properties"]["Dimensions"]
    ]
    assert alarm["Namespace"] == emitted["Namespace"]
    watched = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    assert sorted(watched) in [sorted(names) for names in emitted["Dimensions"]]
    values: dict[str, Any] = dict(document)
    assert all(values[name] == value for name, value in watched.items())
