"""GPU endpoints: each `target = "sagemaker"` model served by NVIDIA Triton on SageMaker, autoscaled on invocations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Aws, CfnMapping, CfnOutput, Duration, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from catalog import ModelEntry
from stacks.alarms import endpoint_alarms
from stacks.config import AppConfig, pascal
from stacks.deploy_gate import TRITON_ARCHIVE
from stacks.nag import suppress

# The SageMaker Triton Inference Server image (sagemaker-python-sdk image_uri_config/sagemaker-tritonserver.json).
TRITON_REPOSITORY = "sagemaker-tritonserver"
TRITON_TAG = "24.09-py3"
TRITON_REGISTRIES: dict[str, str] = {
    "af-south-1": "626614931356",
    "il-central-1": "780543022126",
    "ap-east-1": "871362719292",
    "ap-northeast-1": "763104351884",
    "ap-northeast-2": "763104351884",
    "ap-northeast-3": "364406365360",
    "ap-south-1": "763104351884",
    "ap-southeast-1": "763104351884",
    "ap-southeast-2": "763104351884",
    "ap-southeast-3": "907027046896",
    "ca-central-1": "763104351884",
    "ca-west-1": "204538143572",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
    "eu-central-1": "763104351884",
    "eu-north-1": "763104351884",
    "eu-south-1": "692866216735",
    "eu-west-1": "763104351884",
    "eu-west-2": "763104351884",
    "eu-west-3": "763104351884",
    "me-south-1": "217643126080",
    "sa-east-1": "763104351884",
    "us-east-1": "763104351884",
    "us-east-2": "763104351884",
    "us-west-1": "763104351884",
    "us-west-2": "763104351884",
}
VARIANT_NAME = "AllTraffic"
ENDPOINT_NAME_MAX = 63  # SageMaker's limit
# A canary must be at most half the new fleet: a fleet this small shifts all at once (still blue/green: the old fleet
# serves until the new one is in service, and stays through the bake, ready to take the traffic back).
CANARY_MIN_INSTANCES = 2


@dataclass(frozen=True)
class GpuEndpoint:
    """What a front function needs: the name to call and the ARN its role may invoke."""

    model: str
    endpoint_name: str
    endpoint_arn: str


class TritonEndpoint(Construct):
    """One model on Triton: its repository as an S3 asset, model, endpoint config, endpoint and autoscaling."""

    def __init__(
        self, scope: Construct, construct_id: str, *, entry: ModelEntry, config: AppConfig, image: str, registry: str
    ) -> None:
        super().__init__(scope, construct_id)
        placement = entry.sagemaker
        repository = s3_assets.Asset(
            self, "TritonRepository", path=str(config.package_dir(entry.name) / TRITON_ARCHIVE)
        )

        # Inline, so the policy exists the moment the role does: CreateModel checks the role can read the model data.
        self.role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"Hosts the {entry.name} Triton model: read its repository, pull the Triton image, log",
            inline_policies={
                "Hosting": iam.PolicyDocument(
                    statements=[
                        # The one object, not the whole CDK assets bucket that Asset.grant_read would open.
                        iam.PolicyStatement(
                            actions=["s3:GetObject"],
                            resources=[
                                f"arn:{Aws.PARTITION}:s3:::{repository.s3_bucket_name}/{repository.s3_object_key}"
                            ],
                        ),
                        iam.PolicyStatement(
                            actions=[
                                "ecr:BatchCheckLayerAvailability",
                                "ecr:GetDownloadUrlForLayer",
                                "ecr:BatchGetImage",
                            ],
                            resources=[
                                f"arn:{Aws.PARTITION}:ecr:{Aws.REGION}:{registry}:repository/{TRITON_REPOSITORY}"
                            ],
                        ),
                        # GetAuthorizationToken and PutMetricData have no resource-level permissions.
                        iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]),
                        iam.PolicyStatement(
                            actions=["cloudwatch:PutMetricData"],
                            resources=["*"],
                            conditions={
                                "StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/Endpoints*", "AWS/SageMaker"]}
                            },
                        ),
                        iam.PolicyStatement(
                            actions=[
                                "logs:CreateLogGroup",
                                "logs:CreateLogStream",
                                "logs:PutLogEvents",
                                "logs:DescribeLogStreams",
                            ],
                            resources=[
                                f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/*"
                            ],
                        ),
                    ]
                )
            },
        )

        suppress(
            self.role,
            "AwsSolutions-IAM5",
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData have no resource-level permissions (the latter is "
            "namespace-conditioned); endpoint log streams are created under /aws/sagemaker/Endpoints/<endpoint>",
            applies_to=[
                "Resource::*",
                "Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/Endpoints/*",
            ],
        )
        self.model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=image,
                model_data_url=repository.s3_object_url,
                environment={"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": entry.name},
            ),
        )
        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT_NAME,
                    model_name=self.model.attr_model_name,
                    instance_type=placement.instance_type,
                    initial_instance_count=placement.initial_instance_count,
                    initial_variant_weight=1.0,
                )
            ],
        )
        # Named, so the alarms can watch it before it exists and the endpoint can name them for its rollbacks
        # (the alarm topic's policy trusts alarms under the stack prefix, which the name starts with).
        endpoint_name = f"{Stack.of(self).stack_name}-{construct_id}"
        if len(endpoint_name) > ENDPOINT_NAME_MAX:
            raise ValueError(
                f"endpoint name {endpoint_name!r} is over {ENDPOINT_NAME_MAX} characters: shorten the stage"
            )
        self.alarms = endpoint_alarms(
            self, entry, endpoint_name, VARIANT_NAME, Duration.seconds(config.catalog.platform.api_function_timeout_s)
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=endpoint_name,
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
            deployment_config=blue_green(entry, self.alarms),
            # An update keeps the instance count autoscaling has set, instead of resetting it to the initial count.
            retain_all_variant_properties=True,
        )

        scaling = appscaling.ScalableTarget(
            self,
            "Scaling",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{self.endpoint.attr_endpoint_name}/variant/{VARIANT_NAME}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            # SageMaker scaling runs under its service-linked role; without this CDK would add an unused role.
            role=iam.Role.from_role_arn(
                self,
                "ScalingServiceLinkedRole",
                f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/aws-service-role/"
                "sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
            ),
            min_capacity=placement.initial_instance_count,
            max_capacity=max(placement.max_instance_count, placement.initial_instance_count),
        )
        scaling.scale_to_track_metric(
            "InvocationsPerInstance",
            target_value=placement.invocations_per_instance,
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            scale_in_cooldown=Duration.minutes(5),
            scale_out_cooldown=Duration.minutes(1),
        )
        # Ref of AWS::SageMaker::Endpoint is the endpoint ARN as SageMaker reports it (lower-cased name).
        self.handle = GpuEndpoint(
            model=entry.name, endpoint_name=self.endpoint.attr_endpoint_name, endpoint_arn=self.endpoint.ref
        )


def blue_green(entry: ModelEntry, alarms: list[cloudwatch.Alarm]) -> sagemaker.CfnEndpoint.DeploymentConfigProperty:
    """SageMaker deployment guardrails: a new fleet beside the old, the catalog's canary share of capacity for its
    minutes, then all traffic and the same bake before the old fleet goes; any alarm in that time rolls back."""
    canary = entry.canary
    wait_s = canary.minutes * 60
    if entry.sagemaker.initial_instance_count >= CANARY_MIN_INSTANCES:
        routing = sagemaker.CfnEndpoint.TrafficRoutingConfigProperty(
            type="CANARY",
            canary_size=sagemaker.CfnEndpoint.CapacitySizeProperty(type="CAPACITY_PERCENT", value=canary.percent),
            wait_interval_in_seconds=wait_s,
        )
    else:
        routing = sagemaker.CfnEndpoint.TrafficRoutingConfigProperty(type="ALL_AT_ONCE")
    return sagemaker.CfnEndpoint.DeploymentConfigProperty(
        blue_green_update_policy=sagemaker.CfnEndpoint.BlueGreenUpdatePolicyProperty(
            traffic_routing_configuration=routing, termination_wait_in_seconds=wait_s
        ),
        auto_rollback_configuration=sagemaker.CfnEndpoint.AutoRollbackConfigProperty(
            alarms=[sagemaker.CfnEndpoint.AlarmProperty(alarm_name=alarm.alarm_name) for alarm in alarms]
        ),
    )


class GpuEndpointStack(Stack):
    """Changes with the GPU models only; the API stack receives `endpoints` and wires each front function."""

    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        accounts = CfnMapping(
            self,
            "TritonImageAccounts",
            mapping={region: {"account": account} for region, account in TRITON_REGISTRIES.items()},
            lazy=True,
        )
        registry = accounts.find_in_map(Aws.REGION, "account")
        self.triton_image = f"{registry}.dkr.ecr.{Aws.REGION}.{Aws.URL_SUFFIX}/{TRITON_REPOSITORY}:{TRITON_TAG}"
        self.endpoints: dict[str, GpuEndpoint] = {}
        for entry in config.sagemaker_models:
            construct = TritonEndpoint(
                self, pascal(entry.name), entry=entry, config=config, image=self.triton_image, registry=registry
            )
            self.endpoints[entry.name] = construct.handle
            CfnOutput(self, f"{pascal(entry.name)}EndpointName", value=construct.handle.endpoint_name)
