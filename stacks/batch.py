"""Batch: a file dropped under batch/input/<model>/ is scored by that model's function, fed through its own queue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from catalog import ModelEntry
from stacks.alarms import dead_letter_queue
from stacks.config import BATCH_HANDLER, AppConfig, pascal
from stacks.gpu_endpoint import GpuEndpoint
from stacks.model_function import ModelFunction
from stacks.nag import suppress, suppress_path, suppress_prefix_grants

# The singleton custom-resource function aws-s3 adds for notifications on an imported bucket.
NOTIFICATIONS_HANDLER = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"


class BatchStack(Stack):
    """One queue, dead-letter queue and function per model, so each image carries one package and scales alone.

    The bucket notification is attached to the bucket *imported by attributes*: attaching it to the Artifacts
    stack's construct would put the notification (which references these queues) in the Artifacts stack while
    this stack references the bucket — a cross-stack cycle. The import keeps the dependency one-way.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        bucket: s3.IBucket,
        endpoints: Mapping[str, GpuEndpoint],
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.platform = config.catalog.platform
        notifying_bucket = s3.Bucket.from_bucket_attributes(
            self, "ArtifactBucketRef", bucket_arn=bucket.bucket_arn, bucket_name=bucket.bucket_name
        )
        self.queues: dict[str, sqs.Queue] = {}
        self.dead_letter_queues: dict[str, sqs.Queue] = {}
        self.functions: dict[str, ModelFunction] = {}
        for entry in config.served_models:
            self._model_pipeline(config, entry, bucket, notifying_bucket, endpoints.get(entry.name))
        suppress_path(
            self,
            f"/{self.stack_name}/{NOTIFICATIONS_HANDLER}",
            "AwsSolutions-IAM4",
            "CDK's own BucketNotificationsHandler (sets the bucket notification at deploy time) "
            "uses the AWS managed basic execution role",
        )

    def _model_pipeline(
        self,
        config: AppConfig,
        entry: ModelEntry,
        bucket: s3.IBucket,
        notifying_bucket: s3.IBucket,
        endpoint: GpuEndpoint | None,
    ) -> None:
        platform = self.platform
        name = entry.name
        scope = Construct(self, pascal(name))
        input_prefix = f"{platform.batch_input_prefix}{name}/"
        output_prefix = f"{platform.batch_output_prefix}{name}/"

        dead_letters = dead_letter_queue(
            scope, "DeadLetterQueue", f"batch files for {name} failed {platform.queue_max_receive_count} times"
        )
        queue = sqs.Queue(
            scope,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(platform.queue_visibility_timeout_s),
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=platform.queue_max_receive_count, queue=dead_letters
            ),
        )
        notifying_bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED, s3n.SqsDestination(queue), s3.NotificationKeyFilter(prefix=input_prefix)
        )

        settings = config.function_settings(
            entry,
            platform.batch_function_timeout_s,
            endpoint.endpoint_name if endpoint is not None else None,
            batch_bucket=bucket.bucket_name,
            batch_input_prefix=platform.batch_input_prefix,
            batch_output_prefix=platform.batch_output_prefix,
            batch_rows_per_inference=platform.batch_rows_per_inference,
            batch_shard_bytes=platform.batch_shard_bytes,
            batch_queue_url=queue.queue_url,  # a big file's shard tasks go back to this queue
        )
        function = ModelFunction(
            scope,
            "Scorer",
            config=config,
            entry=entry,
            handler=BATCH_HANDLER,
            memory_mb=platform.batch_function_memory_mb,
            settings=settings,
            no_dead_letter_reason="fed by an SQS event source, never invoked asynchronously: "
            "failed messages go to the queue's own dead-letter queue",
        )
        grant_batch_objects(bucket, function.role, input_prefix, output_prefix)
        queue.grant_send_messages(function.role)
        if endpoint is not None:
            function.role.add_to_policy(
                iam.PolicyStatement(actions=["sagemaker:InvokeEndpoint"], resources=[endpoint.endpoint_arn])
            )
        # The mapping invokes the live alias, so `update-alias` to the previous version rolls the scorer back.
        function.alias.add_event_source(
            event_sources.SqsEventSource(
                queue,
                batch_size=platform.queue_batch_size,
                report_batch_item_failures=True,
                max_concurrency=platform.batch_max_concurrency,  # the brake on a fanned-out file
            )
        )
        suppress(
            function,
            "Serverless-LambdaEventSourceMappingDestination",
            "SQS event source mappings take no on-failure destination; "
            "the queue's redrive policy sends failures to the DLQ",
        )
        self.queues[name] = queue
        self.dead_letter_queues[name] = dead_letters
        self.functions[name] = function
        CfnOutput(self, f"{pascal(name)}InputPrefix", value=f"s3://{bucket.bucket_name}/{input_prefix}")


def grant_batch_objects(bucket: s3.IBucket, role: iam.IRole, input_prefix: str, output_prefix: str) -> None:
    """What the scorer does to objects, and nothing else: it reads its input files; on its output prefix it reads the
    summary first (idempotency) and writes by multipart upload, with conditional writes and aborts (put covers
    s3:PutObject and s3:Abort*), and deletes a fanned-out file's working objects once assembled. grant_read also
    lists the bucket, so a summary not yet written is a 404, not a 403."""
    bucket.grant_read(role, f"{input_prefix}*")
    bucket.grant_read(role, f"{output_prefix}*")
    bucket.grant_put(role, f"{output_prefix}*")
    bucket.grant_delete(role, f"{output_prefix}*")
    suppress_prefix_grants(
        role,
        bucket,
        [f"{input_prefix}*", f"{output_prefix}*"],
        "reads its own input files; reads (the summary), writes and cleans up its own outputs",
    )
