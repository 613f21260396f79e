"""Deploys that undo themselves: every caller invokes a `live` alias, CodeDeploy shifts it as a canary and shifts it
back on the new version's own alarms; the GPU endpoint deploys blue/green and rolls back on its alarms."""

from __future__ import annotations

import dataclasses
import json

import pytest
from aws_cdk import App, Duration
from aws_cdk.assertions import Template

from catalog import Canary, SageMakerPlacement
from stacks.alarms import latency_threshold_ms
from stacks.assembly import assemble
from stacks.canary import ALIAS_ACTIONS
from stacks.gpu_endpoint import CANARY_MIN_INSTANCES, VARIANT_NAME, GpuEndpointStack
from stacks.model_function import LIVE_ALIAS
from tests.infra.conftest import Synthesized, cdk_context


def _of_type(synthesized: Synthesized, kind: str, resource_type: str) -> dict[str, dict]:
    return synthesized.resources(kind, resource_type)


def _function_ids(synthesized: Synthesized, kind: str) -> dict[str, str]:
    """Model name -> logical id of the stack's image function for it."""
    return {
        body["Properties"]["Description"].split(" ")[0]: logical_id
        for logical_id, body in _of_type(synthesized, kind, "AWS::Lambda::Function").items()
        if body["Properties"].get("PackageType") == "Image"
    }


def _aliases(synthesized: Synthesized, kind: str) -> dict[str, tuple[str, dict]]:
    """Function logical id -> (alias logical id, alias body)."""
    return {
        body["Properties"]["FunctionName"]["Ref"]: (logical_id, body)
        for logical_id, body in _of_type(synthesized, kind, "AWS::Lambda::Alias").items()
    }


def _dimensions(alarm: dict) -> dict:
    return {dimension["Name"]: dimension["Value"] for dimension in alarm["Properties"]["Dimensions"]}


def test_every_api_function_publishes_a_version_behind_a_live_alias(synthesized: Synthesized) -> None:
    versions = _of_type(synthesized, "api", "AWS::Lambda::Version")
    aliases = _aliases(synthesized, "api")
    functions = _function_ids(synthesized, "api")
    assert set(functions) == {entry.name for entry in synthesized.config.served_models}
    for name, function_id in functions.items():
        _, alias = aliases[function_id]
        assert alias["Properties"]["Name"] == LIVE_ALIAS, name
        version_id = alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]
        assert versions[version_id]["Properties"]["FunctionName"] == {"Ref": function_id}
        # an old version stays after a deploy: it is what a rollback returns to
        assert versions[version_id]["DeletionPolicy"] == "Retain"


def test_each_alias_is_shifted_by_its_own_deployment_group_with_a_catalog_canary(synthesized: Synthesized) -> None:
    groups = _of_type(synthesized, "api", "AWS::CodeDeploy::DeploymentGroup")
    configs = _of_type(synthesized, "api", "AWS::CodeDeploy::DeploymentConfig")
    aliases = _aliases(synthesized, "api")
    for name, function_id in _function_ids(synthesized, "api").items():
        canary = synthesized.config.catalog.model(name).canary
        _, alias = aliases[function_id]
        update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
        group = groups[update["DeploymentGroupName"]["Ref"]]["Properties"]
        assert group["ApplicationName"] == update["ApplicationName"]
        assert group["DeploymentStyle"] == {"DeploymentOption": "WITH_TRAFFIC_CONTROL", "DeploymentType": "BLUE_GREEN"}
        config = configs[group["DeploymentConfigName"]["Ref"]]["Properties"]
        assert config["ComputePlatform"] == "Lambda"
        assert config["TrafficRoutingConfig"] == {
            "Type": "TimeBasedCanary",
            "TimeBasedCanary": {"CanaryPercentage": canary.percent, "CanaryInterval": canary.minutes},
        }
        assert group["AutoRollbackConfiguration"] == {
            "Enabled": True,
            "Events": ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_REQUEST", "DEPLOYMENT_STOP_ON_ALARM"],
        }


def test_the_catalog_default_canary_is_ten_percent_for_five_minutes() -> None:
    assert (Canary().percent, Canary().minutes) == (10, 5)


def test_a_canary_rolls_back_on_the_new_versions_errors_and_p99_not_the_whole_functions(
    synthesized: Synthesized,
) -> None:
    """The alarms watch the version the alias is moving to (ExecutedVersion), so the old version's errors cannot
    roll a good deploy back, and a bad version cannot hide among the old version's invocations."""
    groups = _of_type(synthesized, "api", "AWS::CodeDeploy::DeploymentGroup")
    alarms = _of_type(synthesized, "api", "AWS::CloudWatch::Alarm")
    aliases = _aliases(synthesized, "api")
    timeout = Duration.seconds(synthesized.config.catalog.platform.api_function_timeout_s)
    for name, function_id in _function_ids(synthesized, "api").items():
        _, alias = aliases[function_id]
        group = groups[alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["DeploymentGroupName"]["Ref"]]
        configuration = group["Properties"]["AlarmConfiguration"]
        assert configuration["Enabled"] is True
        watched = [alarms[entry["Name"]["Ref"]] for entry in configuration["Alarms"]]
        assert sorted(alarm["Properties"]["MetricName"] for alarm in watched) == ["Duration", "Errors"]
        for alarm in watched:
            assert alarm["Properties"]["Namespace"] == "AWS/Lambda"
            assert alarm["Properties"]["Period"] == 60  # a five-minute canary must be able to see it
            assert _dimensions(alarm) == {
                "FunctionName": {"Ref": function_id},
                "Resource": {"Fn::Join": ["", [{"Ref": function_id}, f":{LIVE_ALIAS}"]]},
                "ExecutedVersion": alias["Properties"]["FunctionVersion"],
            }
        (latency,) = [alarm["Properties"] for alarm in watched if alarm["Properties"]["MetricName"] == "Duration"]
        assert latency["ExtendedStatistic"] == "p99"
        assert latency["Threshold"] == latency_threshold_ms(synthesized.config.catalog.model(name), timeout)


def test_codedeploy_role_may_shift_only_its_own_alias_and_read_only_its_canary_alarms(
    synthesized: Synthesized,
) -> None:
    """Not AWSCodeDeployRoleForLambdaLimited, which the CDK construct attaches by default: it allows UpdateAlias on
    every function in the account."""
    roles = _of_type(synthesized, "api", "AWS::IAM::Role")
    policies = _of_type(synthesized, "api", "AWS::IAM::Policy")
    groups = _of_type(synthesized, "api", "AWS::CodeDeploy::DeploymentGroup")
    aliases = _aliases(synthesized, "api")
    for function_id in _function_ids(synthesized, "api").values():
        _, alias = aliases[function_id]
        group = groups[alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["DeploymentGroupName"]["Ref"]]
        role_id = group["Properties"]["ServiceRoleArn"]["Fn::GetAtt"][0]
        role = roles[role_id]["Properties"]
        assert "ManagedPolicyArns" not in role
        assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "codedeploy.amazonaws.com"}
        (policy,) = [p["Properties"] for p in policies.values() if p["Properties"]["Roles"] == [{"Ref": role_id}]]
        statements = {
            json.dumps(sorted(_as_list(s["Action"]))): _as_list(s["Resource"])
            for s in policy["PolicyDocument"]["Statement"]
        }
        assert statements == {
            json.dumps(sorted(ALIAS_ACTIONS)): [
                {"Fn::GetAtt": [function_id, "Arn"]},
                {"Fn::Join": ["", [{"Fn::GetAtt": [function_id, "Arn"]}, f":{LIVE_ALIAS}"]]},
            ],
            json.dumps(["cloudwatch:DescribeAlarms"]): [
                {"Fn::GetAtt": [entry["Name"]["Ref"], "Arn"]}
                for entry in group["Properties"]["AlarmConfiguration"]["Alarms"]
            ],
        }


def test_api_gateway_invokes_the_alias_and_may_invoke_nothing_else(synthesized: Synthesized) -> None:
    aliases = {alias_id for alias_id, _ in _aliases(synthesized, "api").values()}
    integrations = _of_type(synthesized, "api", "AWS::ApiGatewayV2::Integration").values()
    assert integrations
    targets = {integration["Properties"]["IntegrationUri"]["Ref"] for integration in integrations}
    assert targets <= aliases
    assert len(targets) == len(synthesized.config.served_models)
    permissions = _of_type(synthesized, "api", "AWS::Lambda::Permission").values()
    assert permissions
    assert {permission["Properties"]["FunctionName"]["Ref"] for permission in permissions} <= aliases


def test_batch_event_sources_invoke_the_scorers_alias(synthesized: Synthesized) -> None:
    aliases = {alias_id for alias_id, _ in _aliases(synthesized, "batch").values()}
    mappings = _of_type(synthesized, "batch", "AWS::Lambda::EventSourceMapping").values()
    assert len(mappings) == len(synthesized.config.served_models)
    # CDK names the alias as `<function name>:live`, taken from the alias ARN
    targets = [mapping["Properties"]["FunctionName"]["Fn::Join"][1] for mapping in mappings]
    assert all(target[1] == f":{LIVE_ALIAS}" for target in targets)
    assert {target[0]["Fn::Select"][1]["Fn::Split"][1]["Ref"] for target in targets} == aliases
    for _, alias in _aliases(synthesized, "batch").values():
        assert alias["Properties"]["Name"] == LIVE_ALIAS
        assert "UpdatePolicy" not in alias  # plain alias: see the README, "Canary deploys"


def test_batch_ships_only_after_the_api_stack_and_its_canaries(synthesized: Synthesized) -> None:
    stacks = synthesized.stacks
    assert stacks.api in stacks.batch.dependencies


def test_endpoint_deploys_blue_green_rolls_back_on_its_alarms_and_keeps_its_capacity(
    synthesized: Synthesized,
) -> None:
    (entry,) = synthesized.config.sagemaker_models
    alarms = _of_type(synthesized, "gpu", "AWS::CloudWatch::Alarm")
    (endpoint,) = _of_type(synthesized, "gpu", "AWS::SageMaker::Endpoint").values()
    properties = endpoint["Properties"]
    assert properties["RetainAllVariantProperties"] is True
    config = properties["DeploymentConfig"]
    # Ref of an alarm is its name
    watched = {
        alarms[alarm["AlarmName"]["Ref"]]["Properties"]["MetricName"]: alarms[alarm["AlarmName"]["Ref"]]["Properties"]
        for alarm in config["AutoRollbackConfiguration"]["Alarms"]
    }
    assert set(watched) == {"Invocation5XXErrors", "ModelLatency"}
    assert len(config["AutoRollbackConfiguration"]["Alarms"]) == 2
    # the endpoint is named, so its alarms can exist before it (SageMaker looks them up when it deploys)
    assert properties["EndpointName"].startswith(synthesized.config.stack_prefix)
    for alarm in watched.values():
        assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == {
            "EndpointName": properties["EndpointName"],
            "VariantName": VARIANT_NAME,
        }
    policy = config["BlueGreenUpdatePolicy"]
    assert policy["TerminationWaitInSeconds"] == entry.canary.minutes * 60
    # the catalog's single initial instance cannot host a canary of at most half the fleet
    assert entry.sagemaker.initial_instance_count < CANARY_MIN_INSTANCES
    assert policy["TrafficRoutingConfiguration"] == {"Type": "ALL_AT_ONCE"}


@pytest.fixture(scope="module")
def two_instance_endpoint(synthesized: Synthesized) -> Template:
    """The GPU stack for a catalog whose endpoint starts with two instances and a 25 % / 3 minute canary."""
    catalog = synthesized.config.catalog
    (entry,) = synthesized.config.sagemaker_models
    changed = entry.model_copy(
        update={
            "sagemaker": SageMakerPlacement(initial_instance_count=2, max_instance_count=4),
            "canary": Canary(percent=25, minutes=3),
        }
    )
    config = dataclasses.replace(
        synthesized.config, catalog=catalog.model_copy(update={"models": {**catalog.models, entry.name: changed}})
    )
    return Template.from_stack(GpuEndpointStack(App(context=cdk_context()), "TwoInstances", config=config))


def test_an_endpoint_of_two_or_more_instances_shifts_a_catalog_canary_first(two_instance_endpoint: Template) -> None:
    (endpoint,) = two_instance_endpoint.find_resources("AWS::SageMaker::Endpoint").values()
    policy = endpoint["Properties"]["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {
        "Type": "CANARY",
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 25},
        "WaitIntervalInSeconds": 180,
    }
    assert policy["TerminationWaitInSeconds"] == 180


def test_a_catalog_canary_changes_the_lambda_deployment_config(
    synthesized: Synthesized, tmp_path_factory: pytest.TempPathFactory
) -> None:
    catalog = synthesized.config.catalog
    slow = catalog.models["digits"].model_copy(update={"canary": Canary(percent=20, minutes=15)})
    config = dataclasses.replace(
        synthesized.config,
        catalog=catalog.model_copy(update={"models": {**catalog.models, "digits": slow}}),
        gpu_endpoints=False,
    )
    app = App(context=cdk_context(), outdir=str(tmp_path_factory.mktemp("slow-canary")))
    template = Template.from_stack(assemble(app, config).api)
    routings = [
        config_["Properties"]["TrafficRoutingConfig"]["TimeBasedCanary"]
        for config_ in template.find_resources("AWS::CodeDeploy::DeploymentConfig").values()
    ]
    assert {"CanaryPercentage": 20, "CanaryInterval": 15} in routings
    assert {"CanaryPercentage": 10, "CanaryInterval": 5} in routings  # the other models keep the default


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [value]
