"""Realtime API: one container-image function per served model behind an authorized, throttled, logged HTTP API."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsii
from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.alarms import function_alarms, http_api_alarms
from stacks.canary import CanaryDeployment
from stacks.config import API_HANDLER, SERVICE_NAME, AppConfig, pascal
from stacks.gpu_endpoint import GpuEndpoint
from stacks.model_function import ModelFunction, retention
from stacks.routes import SERVER_ROUTES, model_routes

ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "caller": "$context.identity.caller",
    "userArn": "$context.identity.userArn",
    "jwtSubject": "$context.authorizer.claims.sub",
    "requestTime": "$context.requestTime",
    "routeKey": "$context.routeKey",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "integrationLatency": "$context.integrationLatency",
    "integrationError": "$context.integrationErrorMessage",
    "authorizerError": "$context.authorizer.error",
}


class RealtimeApiStack(Stack):
    """Changes with the serving code and the Lambda-placed models; GPU endpoints arrive as `endpoints`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        endpoints: Mapping[str, GpuEndpoint],
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        platform = config.catalog.platform
        timeout = Duration.seconds(platform.api_function_timeout_s)

        self.functions: dict[str, ModelFunction] = {}
        self.deployments: dict[str, CanaryDeployment] = {}
        application = codedeploy.LambdaApplication(self, "Deployments")
        for entry in config.served_models:
            endpoint = endpoints.get(entry.name)
            function = ModelFunction(
                self,
                f"{pascal(entry.name)}Api",
                config=config,
                entry=entry,
                handler=API_HANDLER,
                memory_mb=config.memory_mb(entry),
                settings=config.function_settings(
                    entry, platform.api_function_timeout_s, endpoint.endpoint_name if endpoint else None
                ),
                no_dead_letter_reason="invoked synchronously by API Gateway: the caller gets the error, "
                "there is no asynchronous event to keep",
                reserved_concurrency=entry.max_instances if config.reserve_concurrency else None,
            )
            if endpoint is not None:
                function.role.add_to_policy(
                    iam.PolicyStatement(actions=["sagemaker:InvokeEndpoint"], resources=[endpoint.endpoint_arn])
                )
            function_alarms(function, function.function, entry, timeout, config.metrics_namespace, SERVICE_NAME)
            self.functions[entry.name] = function
            self.deployments[entry.name] = CanaryDeployment(
                function, "Canary", function=function, entry=entry, application=application, timeout=timeout
            )

        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=retention(platform.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.api = apigwv2.HttpApi(
            self,
            "HttpApi",
            description=f"Model serving ({config.stage}): Open Inference Protocol v2 and KServe v1",
            default_authorizer=self._authorizer(config),
            cors_preflight=_cors(config.cors_origins),
            create_default_stage=False,
        )
        self.stage = apigwv2.HttpStage(
            self,
            "DefaultStage",
            http_api=self.api,
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(
                rate_limit=platform.api_throttle_rate, burst_limit=platform.api_throttle_burst
            ),
            access_log_settings=_access_log_settings(self.access_logs),
        )
        # Every integration invokes the live alias: the version CodeDeploy is shifting traffic to, or back from.
        for entry in config.served_models:
            integration = integrations.HttpLambdaIntegration(
                f"{pascal(entry.name)}Integration", self.functions[entry.name].alias
            )
            for path, methods in model_routes(entry.name):
                self.api.add_routes(
                    path=path, methods=[apigwv2.HttpMethod(m) for m in methods], integration=integration
                )
        server = self.functions[config.served_models[0].name].alias
        server_integration = integrations.HttpLambdaIntegration("ServerIntegration", server)
        for path, methods in SERVER_ROUTES:
            self.api.add_routes(
                path=path, methods=[apigwv2.HttpMethod(m) for m in methods], integration=server_integration
            )

        http_api_alarms(self.api, self.api)
        CfnOutput(self, "ApiUrl", value=self.stage.url)

    @staticmethod
    def _authorizer(config: AppConfig) -> apigwv2.IHttpRouteAuthorizer:
        """SigV4 (IAM) unless the context names a JWT issuer and audience."""
        if config.jwt is None:
            return authorizers.HttpIamAuthorizer()
        return authorizers.HttpJwtAuthorizer("JwtAuthorizer", config.jwt.issuer, jwt_audience=list(config.jwt.audience))


@jsii.implements(apigwv2.IAccessLogSettings)
class _JsonAccessLogs:
    """IAccessLogSettings is only an interface in aws-cdk-lib: JSON lines (structured logging) into one log group."""

    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._log_group = log_group

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return apigwv2.LogGroupLogDestination(self._log_group)

    @property
    def format(self) -> apigw.AccessLogFormat:
        return apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT))


def _access_log_settings(log_group: logs.ILogGroup) -> apigwv2.IAccessLogSettings:
    return _JsonAccessLogs(log_group)


def _cors(origins: tuple[str, ...]) -> apigwv2.CorsPreflightOptions | None:
    if not origins:
        return None
    return apigwv2.CorsPreflightOptions(
        allow_origins=list(origins),
        allow_methods=[apigwv2.CorsHttpMethod.GET, apigwv2.CorsHttpMethod.POST],
        allow_headers=["authorization", "content-type", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"],
        max_age=Duration.hours(1),
    )
