"""Data capture in AWS: an API function's capture log lines reach S3 without a synchronous call on the request path.

The function prints one JSON line per record; a CloudWatch Logs subscription filter on its log group passes the
capture lines to this model's Firehose stream, which unpacks them and writes them, newline-delimited and gzipped,
under `<capture prefix><model>/<yyyy-mm-dd>/`.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy, Size
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_logs as logs
from aws_cdk import aws_logs_destinations as destinations
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.model_function import retention
from stacks.nag import object_resource, suppress

# What the monitor's capture lines carry at the top level (functions/runtime/capture.py prints them).
CAPTURE_KIND = "data_capture"
CAPTURE_FILTER = logs.FilterPattern.string_value("$.kind", "=", CAPTURE_KIND)
# Firehose writes this prefix itself; its S3 actions as AWS documents them for an S3 destination.
DELIVERY_OBJECT_ACTIONS = ("s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject")
DELIVERY_BUCKET_ACTIONS = ("s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads")


def capture_errors_prefix(capture_prefix: str) -> str:
    """Records Firehose could not process land beside the capture prefix, never in it (the drift check reads it)."""
    return f"{capture_prefix.rstrip('/')}-errors/"


class CaptureStream(Construct):
    """One model's capture path: its own stream, so a record can only land under the prefix of the function that
    logged it, and each role reaches that one prefix and that one stream."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        model: str,
        bucket: s3.IBucket,
        capture_prefix: str,
        source: logs.ILogGroup,
        log_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.data_prefix = f"{capture_prefix}{model}/"
        self.errors_prefix = f"{capture_errors_prefix(capture_prefix)}{model}/"

        delivery_logs = logs.LogGroup(
            self, "DeliveryLogs", retention=retention(log_retention_days), removal_policy=RemovalPolicy.DESTROY
        )
        self.delivery_role = iam.Role(
            self,
            "DeliveryRole",
            assumed_by=iam.ServicePrincipal(
                "firehose.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}
            ),
            description=f"Firehose writes {model}'s capture records under {self.data_prefix} only",
        )
        self.delivery_role.add_to_policy(
            iam.PolicyStatement(
                actions=list(DELIVERY_OBJECT_ACTIONS),
                resources=[
                    bucket.arn_for_objects(f"{self.data_prefix}*"),
                    bucket.arn_for_objects(f"{self.errors_prefix}*"),
                ],
            )
        )
        self.delivery_role.add_to_policy(
            iam.PolicyStatement(actions=list(DELIVERY_BUCKET_ACTIONS), resources=[bucket.bucket_arn])
        )
        delivery_logs.grant_write(self.delivery_role)
        suppress(
            self.delivery_role,
            "AwsSolutions-IAM5",
            f"Firehose names the objects it writes itself: object actions on {model}'s capture and capture-errors "
            "prefixes only",
            applies_to=[object_resource(bucket, f"{prefix}*") for prefix in (self.data_prefix, self.errors_prefix)],
        )

        self.stream = firehose.DeliveryStream(
            self,
            "Stream",
            encryption=firehose.StreamEncryption.aws_owned_key(),
            destination=firehose.S3Bucket(
                bucket,
                # The L2 destination grants read-write on the whole bucket to the role it is given: give it a view
                # that ignores grants, and scope the real role to this model's prefixes above.
                role=self.delivery_role.without_policy_updates(),
                data_output_prefix=f"{self.data_prefix}!{{timestamp:yyyy-MM-dd}}/",
                error_output_prefix=f"{self.errors_prefix}!{{firehose:error-output-type}}/!{{timestamp:yyyy-MM-dd}}/",
                processors=[
                    firehose.DecompressionProcessor(),  # subscription filters deliver gzip batches
                    firehose.CloudWatchLogProcessor(data_message_extraction=True),  # the log lines, no envelope
                    firehose.AppendDelimiterToRecordProcessor(),  # one record a line
                ],
                compression=firehose.Compression.GZIP,
                buffering_interval=Duration.minutes(5),
                buffering_size=Size.mebibytes(5),
                logging_config=firehose.EnableLogging(delivery_logs),
            ),
        )
        self.stream.node.add_dependency(self.delivery_role)  # its policy exists before the first delivery

        # CloudWatch Logs, acting for this one log group only (confused deputy), may put into this one stream.
        self.subscription_role = iam.Role(
            self,
            "SubscriptionRole",
            assumed_by=iam.ServicePrincipal(
                "logs.amazonaws.com",
                conditions={
                    "StringLike": {
                        "aws:SourceArn": f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:"
                        f"{source.log_group_name}*"
                    }
                },
            ),
            description=f"CloudWatch Logs passes {model}'s capture lines to its Firehose stream",
        )
        self.subscription = logs.SubscriptionFilter(
            self,
            "Subscription",
            log_group=source,
            destination=destinations.FirehoseDestination(self.stream, role=self.subscription_role),
            filter_pattern=CAPTURE_FILTER,
        )
