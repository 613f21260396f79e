"""Artifacts: the stateful bucket (datasets, packages, batch files) and the training role; retained on delete."""

from __future__ import annotations

from typing import Any

from aws_cdk import Aws, CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.config import AppConfig
from stacks.nag import suppress, suppress_prefix_grants

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"


class ArtifactsStack(Stack):
    """Owns the data; every other stack gets the bucket construct and is granted only its own prefixes."""

    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, termination_protection=config.termination_protection, **kwargs)
        platform = config.catalog.platform

        self.access_log_bucket = s3.Bucket(
            self,
            "AccessLogBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(365))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.bucket = s3.Bucket(
            self,
            "ArtifactBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix="artifact-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-batch-outputs",
                    prefix=platform.batch_output_prefix,
                    expiration=Duration.days(platform.batch_output_expiry_days),
                    noncurrent_version_expiration=Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(7)
                ),
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )

        self.training_role = iam.Role(
            self,
            "TrainingRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="SageMaker training jobs: read datasets, write model packages, log; nothing else",
        )
        self.bucket.grant_read(self.training_role, f"{platform.datasets_prefix}*")
        self.bucket.grant_read_write(self.training_role, f"{platform.models_prefix}*")
        suppress_prefix_grants(
            self.training_role,
            self.bucket,
            [f"{platform.datasets_prefix}*", f"{platform.models_prefix}*"],
            "training reads datasets and writes model packages, nothing else in the bucket",
        )
        self.training_role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:{TRAINING_LOG_GROUP}:*"],
            )
        )
        # PutMetricData has no resource-level permissions; the namespace condition is the scope.
        self.training_role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": TRAINING_LOG_GROUP}},
            )
        )

        suppress(
            self.training_role,
            "AwsSolutions-IAM5",
            "PutMetricData has no resource-level permissions (scoped by the cloudwatch:namespace condition); "
            "log streams are created per job under the TrainingJobs log group",
            applies_to=[
                "Resource::*",
                f"Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:{TRAINING_LOG_GROUP}:*",
            ],
        )
        CfnOutput(self, "ArtifactBucketName", value=self.bucket.bucket_name)
        CfnOutput(self, "TrainingRoleArn", value=self.training_role.role_arn)
