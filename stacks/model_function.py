"""One image, many handlers: every model function is the same Dockerfile with its own package and command."""

from __future__ import annotations

from aws_cdk import Duration, IgnoreMode, RemovalPolicy
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from catalog import ModelEntry, Target
from functions.runtime.package import graph_files, read_manifest
from functions.runtime.settings import Settings
from stacks.config import DOCKERFILE, AppConfig
from stacks.nag import XRAY_REASON, suppress

ARCHITECTURES = {"x86_64": lambda_.Architecture.X86_64, "arm64": lambda_.Architecture.ARM_64}
PLATFORMS = {"x86_64": ecr_assets.Platform.LINUX_AMD64, "arm64": ecr_assets.Platform.LINUX_ARM64}

# Everything CDK stages is hashed and copied into cdk.out: keep the context to the runtime code and one package.
ALWAYS_EXCLUDED = ("**/__pycache__", "**/*.pyc", "**/.pytest_cache")
# Every caller (API Gateway, the SQS event source) invokes this alias, never $LATEST: a deploy publishes a version
# and moves the alias, and moving it back is a rollback.
LIVE_ALIAS = "live"


def image_exclude(config: AppConfig, entry: ModelEntry) -> list[str]:
    """Docker-style ignore patterns that leave only functions/ and this model's package in the build context.

    A model served by a GPU endpoint keeps its graph and Triton repository out: its functions only pre/post-process.
    """
    package = config.package_context_path(entry.name)
    endpoint_only = []
    if entry.target is Target.SAGEMAKER:
        manifest = read_manifest(config.package_dir(entry.name))
        endpoint_only = sorted({f"{package}/{name.split('/')[0]}" for name in graph_files(manifest)})
    return ["*", "!functions", f"!{package}", *endpoint_only, *ALWAYS_EXCLUDED]


def model_image_code(config: AppConfig, entry: ModelEntry, handler: str) -> lambda_.DockerImageCode:
    """The shared image asset for `entry`; identical props give one asset hash, so API and batch share one image."""
    return lambda_.DockerImageCode.from_image_asset(
        str(config.source_root),
        file=DOCKERFILE,
        build_args={
            "MODEL_NAME": entry.name,
            "MODEL_DIR": config.package_context_path(entry.name),
            "MODEL_VERSION": config.version(entry.name),  # the approved version: the image's label
        },
        display_name=f"{entry.name}:{config.version(entry.name)}",
        platform=PLATFORMS[entry.lambda_.architecture],
        exclude=image_exclude(config, entry),
        ignore_mode=IgnoreMode.DOCKER,
        cmd=[handler],
    )


class ModelFunction(Construct):
    """A container-image Lambda for one model with its own log group, least-privilege role and X-Ray tracing, and
    its `live` alias on the version this deploy published."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        entry: ModelEntry,
        handler: str,
        memory_mb: int,
        settings: Settings,
        no_dead_letter_reason: str,
        reserved_concurrency: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=retention(config.catalog.platform.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        # An explicit role instead of AWSLambdaBasicExecutionRole: logs go to this function's own log group only.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Runs the {entry.name} model function",
        )
        self.log_group.grant_write(self.role)
        self.function = lambda_.DockerImageFunction(
            self,
            "Function",
            code=model_image_code(config, entry, handler),
            architecture=ARCHITECTURES[entry.lambda_.architecture],
            memory_size=memory_mb,
            timeout=Duration.seconds(settings.function_timeout_s),  # the one the function sizes its calls to
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=reserved_concurrency,
            description=f"{entry.name} ({entry.task}) via {handler}",
            environment=settings.to_environment(),
            # A deploy's new version replaces the old one in the template; the old one stays in Lambda, where
            # `update-alias` can return to it.
            current_version_options=lambda_.VersionOptions(removal_policy=RemovalPolicy.RETAIN),
        )

        # current_version: a new version whenever code or configuration changes
        self.version = self.function.current_version
        self.alias = lambda_.Alias(self, "Live", alias_name=LIVE_ALIAS, version=self.version)

        suppress(self.role, "AwsSolutions-IAM5", XRAY_REASON, applies_to=["Resource::*"])
        suppress(self.function, "Serverless-LambdaDLQ", no_dead_letter_reason)


def retention(days: int) -> logs.RetentionDays:
    """CloudWatch accepts a fixed set of retention periods: take the shortest one that keeps `days`."""
    for allowed, member in _RETENTION_PERIODS:
        if allowed >= days:
            return member
    return _RETENTION_PERIODS[-1][1]


_RETENTION_PERIODS = (
    (1, logs.RetentionDays.ONE_DAY),
    (3, logs.RetentionDays.THREE_DAYS),
    (5, logs.RetentionDays.FIVE_DAYS),
    (7, logs.RetentionDays.ONE_WEEK),
    (14, logs.RetentionDays.TWO_WEEKS),
    (30, logs.RetentionDays.ONE_MONTH),
    (60, logs.RetentionDays.TWO_MONTHS),
    (90, logs.RetentionDays.THREE_MONTHS),
    (180, logs.RetentionDays.SIX_MONTHS),
    (365, logs.RetentionDays.ONE_YEAR),
    (731, logs.RetentionDays.TWO_YEARS),
    (1827, logs.RetentionDays.FIVE_YEARS),
    (3653, logs.RetentionDays.TEN_YEARS),
)
