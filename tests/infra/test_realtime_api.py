"""Realtime API stack: one image function per served model, an HTTP API whose every route is authorized."""

from __future__ import annotations

import json

import pytest
from aws_cdk import App
from aws_cdk.assertions import Match, Template

from catalog import Target, load_catalog
from functions.runtime.settings import Settings
from stacks.config import API_HANDLER, AppConfig, JwtSettings
from stacks.realtime_api import RealtimeApiStack
from stacks.routes import SERVER_ROUTES, route_keys
from tests.infra.conftest import Synthesized, cdk_context, literal_environment


def _functions(synthesized: Synthesized) -> dict[str, dict]:
    """API functions keyed by model name (each description starts with it)."""
    functions = synthesized.resources("api", "AWS::Lambda::Function")
    return {
        function["Properties"]["Description"].split(" ")[0]: function["Properties"] for function in functions.values()
    }


def test_one_image_function_per_served_model(synthesized: Synthesized) -> None:
    catalog = synthesized.config.catalog
    functions = _functions(synthesized)
    assert set(functions) == {entry.name for entry in synthesized.config.served_models}
    for name, function in functions.items():
        entry = catalog.model(name)
        assert function["PackageType"] == "Image"
        assert function["ImageConfig"]["Command"] == [API_HANDLER]
        assert function["MemorySize"] == entry.lambda_.memory_mb
        assert function["Architectures"] == [entry.lambda_.architecture]
        assert function["TracingConfig"] == {"Mode": "Active"}
        assert function["Environment"]["Variables"]["MODELS_DIR"] == "/var/task/models"
        assert json.loads(function["Environment"]["Variables"]["MAX_INSTANCES"]) == {name: entry.max_instances}
        assert json.loads(function["Environment"]["Variables"]["CAPTURE_RATES"]) == {
            name: entry.monitoring.capture_rate
        }
        assert "LogGroup" in function["LoggingConfig"]


def test_api_function_timeouts_stay_below_the_http_api_limit(synthesized: Synthesized) -> None:
    timeouts = {name: function["Timeout"] for name, function in _functions(synthesized).items()}
    assert all(timeout < 30 for timeout in timeouts.values()), timeouts
    assert set(timeouts.values()) == {synthesized.config.catalog.platform.api_function_timeout_s}


def test_functions_know_their_own_timeout_and_their_endpoints_batch_limit(synthesized: Synthesized) -> None:
    """Endpoint calls are sized to end before the function's timeout, and chunked to Triton's max_batch_size."""
    for name, function in _functions(synthesized).items():
        entry = synthesized.config.catalog.model(name)
        settings = Settings.from_env(literal_environment(function))
        assert settings.function_timeout_s == function["Timeout"], name
        expected = {name: entry.sagemaker.max_batch_size} if entry.target is Target.SAGEMAKER else {}
        assert settings.sagemaker_max_batch == expected, name


def test_function_log_groups_have_retention(synthesized: Synthesized) -> None:
    for log_group in synthesized.resources("api", "AWS::Logs::LogGroup").values():
        assert log_group["Properties"]["RetentionInDays"] >= synthesized.config.catalog.platform.log_retention_days


def test_every_route_is_authorized_with_iam_by_default(synthesized: Synthesized) -> None:
    routes = synthesized.resources("api", "AWS::ApiGatewayV2::Route").values()
    assert routes
    assert {route["Properties"]["AuthorizationType"] for route in routes} == {"AWS_IAM"}


def test_routes_cover_v2_v1_and_server_paths_for_every_model(synthesized: Synthesized) -> None:
    keys = {
        route["Properties"]["RouteKey"] for route in synthesized.resources("api", "AWS::ApiGatewayV2::Route").values()
    }
    expected = {f"GET {path}" for path, _ in SERVER_ROUTES}
    for entry in synthesized.config.served_models:
        expected |= {
            f"GET /v2/models/{entry.name}",
            f"POST /v2/models/{entry.name}/versions/{{version}}/infer",  # any registered version, by path
            f"GET /v2/models/{entry.name}/{{proxy+}}",
            f"POST /v2/models/{entry.name}/{{proxy+}}",
            f"GET /v1/models/{entry.name}",
            f"POST /v1/models/{entry.name}:predict",
        }
    assert keys == expected
    # the local front answers exactly these routes and leaves every other request to the gateway's own 404
    assert set(route_keys(entry.name for entry in synthesized.config.served_models)) == keys


def test_default_stage_throttles_and_writes_json_access_logs(synthesized: Synthesized) -> None:
    platform = synthesized.config.catalog.platform
    (stage,) = synthesized.resources("api", "AWS::ApiGatewayV2::Stage").values()
    properties = stage["Properties"]
    assert properties["StageName"] == "$default"
    assert properties["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": platform.api_throttle_burst,
        "ThrottlingRateLimit": platform.api_throttle_rate,
    }
    assert "Fn::GetAtt" in properties["AccessLogSettings"]["DestinationArn"]
    access_log = json.loads(properties["AccessLogSettings"]["Format"])
    assert access_log["requestId"] == "$context.requestId"


def test_no_cors_unless_configured(synthesized: Synthesized) -> None:
    (api,) = synthesized.resources("api", "AWS::ApiGatewayV2::Api").values()
    assert "CorsConfiguration" not in api["Properties"]


def test_errors_throttles_server_errors_and_p99_alarms_per_function(synthesized: Synthesized) -> None:
    alarms = synthesized.resources("api", "AWS::CloudWatch::Alarm").values()
    by_metric: dict[str, int] = {}
    for alarm in alarms:
        key = alarm["Properties"].get("MetricName", "metric math")
        by_metric[key] = by_metric.get(key, 0) + 1
    served = len(synthesized.config.served_models)
    # per function (errors and p99 twice: the whole function, and the version a canary deploys, test_rollout.py),
    # plus the HTTP API's 5xx and 4xx rate (test_alarms.py)
    assert by_metric == {
        "Errors": 2 * served,
        "Throttles": served,
        "ServerErrors": served,
        "Duration": 2 * served,
        "5xx": 1,
        "metric math": 1,
    }
    p99 = [alarm for alarm in alarms if alarm["Properties"].get("ExtendedStatistic") == "p99"]
    assert len(p99) == 2 * served


def test_gpu_model_front_function_may_invoke_only_its_endpoint(synthesized: Synthesized) -> None:
    gpu_models = [entry.name for entry in synthesized.config.catalog.on(Target.SAGEMAKER)]
    assert gpu_models
    gpu_outputs = synthesized.template("gpu").to_json()["Outputs"]
    endpoints = synthesized.resources("gpu", "AWS::SageMaker::Endpoint")
    for name in gpu_models:
        role_policy = _policy_of(synthesized, f"{name.capitalize()}ApiRole")
        invoke = [s for s in role_policy["Statement"] if "sagemaker:InvokeEndpoint" in _as_list(s["Action"])]
        assert len(invoke) == 1
        assert _as_list(invoke[0]["Action"]) == ["sagemaker:InvokeEndpoint"]
        output_name = invoke[0]["Resource"]["Fn::GetStackOutput"]["OutputName"]
        # The output the API stack reads is the endpoint's Ref, which CloudFormation defines as its ARN.
        assert gpu_outputs[output_name]["Value"]["Ref"] in endpoints
        environment = _functions(synthesized)[name]["Environment"]["Variables"]
        assert name in json.dumps(environment["SAGEMAKER_ENDPOINTS"])
    for name in {entry.name for entry in synthesized.config.lambda_models}:
        statements = _policy_of(synthesized, f"{name.capitalize()}ApiRole")["Statement"]
        assert not [s for s in statements if "sagemaker:InvokeEndpoint" in _as_list(s["Action"])]


@pytest.fixture(scope="module")
def jwt_api(synthesized: Synthesized) -> Template:
    """The API stack alone, with a JWT issuer and CORS origins in its config (no GPU models, no nag)."""
    config = AppConfig(
        catalog=load_catalog(),
        source_root=synthesized.config.source_root,
        packages_dir=synthesized.config.packages_dir,
        lock=synthesized.config.lock,
        jwt=JwtSettings(issuer="https://issuer.example.com/", audience=("model-clients",)),
        cors_origins=("https://app.example.com",),
        gpu_endpoints=False,
    )
    stack = RealtimeApiStack(App(context=cdk_context()), "JwtApi", config=config, endpoints={})
    return Template.from_stack(stack)


def test_jwt_authorizer_when_configured(jwt_api: Template) -> None:
    jwt_api.has_resource_properties(
        "AWS::ApiGatewayV2::Authorizer",
        {
            "AuthorizerType": "JWT",
            "JwtConfiguration": {"Issuer": "https://issuer.example.com/", "Audience": ["model-clients"]},
        },
    )
    routes = jwt_api.find_resources("AWS::ApiGatewayV2::Route").values()
    assert {route["Properties"]["AuthorizationType"] for route in routes} == {"JWT"}
    jwt_api.has_resource_properties(
        "AWS::ApiGatewayV2::Api",
        {"CorsConfiguration": Match.object_like({"AllowOrigins": ["https://app.example.com"]})},
    )


def _policy_of(synthesized: Synthesized, role_prefix: str) -> dict:
    for policy in synthesized.resources("api", "AWS::IAM::Policy").values():
        if policy["Properties"]["Roles"][0]["Ref"].startswith(role_prefix):
            return policy["Properties"]["PolicyDocument"]
    raise AssertionError(f"no policy for {role_prefix}")


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [value]
