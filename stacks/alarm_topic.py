"""Someone is told: one encrypted topic that every alarm in the app notifies, and an e-mail subscriber if set."""

from __future__ import annotations

from typing import Any

import jsii
from aws_cdk import Aws, CfnOutput, Duration, IAspect, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct, IConstruct

from stacks.alarms import dead_letter_queue
from stacks.config import AppConfig
from stacks.nag import suppress


class AlarmTopicStack(Stack):
    """The topic lives apart from what it watches, so any stack's alarms can notify it without a cycle."""

    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # A customer-managed key: CloudWatch cannot publish to a topic under the AWS-managed aws/sns key.
        self.key = kms.Key(
            self,
            "AlarmTopicKey",
            description=f"Encrypts the model-serving ({config.stage}) alarm topic",
            enable_key_rotation=True,
            # It only protects notifications in flight; nothing outlives the topic.
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        self.topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"Model serving {config.stage} alarms",
            master_key=self.key,
            enforce_ssl=True,
        )
        self._allow_cloudwatch(config)
        if config.alarm_email:
            self._subscribe_email(config.alarm_email)
        CfnOutput(self, "AlarmTopicArn", value=self.topic.topic_arn)

    def _allow_cloudwatch(self, config: AppConfig) -> None:
        """Publish and the key, to CloudWatch acting for this app's alarms in this account only (confused deputy)."""
        cloudwatch_principal = iam.ServicePrincipal("cloudwatch.amazonaws.com")
        conditions = {
            "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
            "ArnLike": {
                "aws:SourceArn": f"arn:{Aws.PARTITION}:cloudwatch:{Aws.REGION}:{Aws.ACCOUNT_ID}:alarm:"
                f"{config.stack_prefix}-*"
            },
        }
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[cloudwatch_principal],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions=conditions,
            )
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[cloudwatch_principal],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions=conditions,
            )
        )

    def _subscribe_email(self, address: str) -> None:
        """Notifications SNS could not deliver land in a dead-letter queue instead of vanishing."""
        undelivered = dead_letter_queue(self, "UndeliveredAlarms", "alarm notifications could not be e-mailed")
        self.topic.add_subscription(subscriptions.EmailSubscription(address, dead_letter_queue=undelivered))
        suppress(
            undelivered,
            "AwsSolutions-SQS3",
            "this is the e-mail subscription's dead-letter queue: the target of the SNS redrive policy, which the "
            "rule does not recognise as one",
        )


@jsii.implements(IAspect)
class NotifyOnAlarm:
    """Every alarm in the scope notifies the topic, including alarms added later: none can be forgotten."""

    def __init__(self, topic: sns.ITopic) -> None:
        self._action = actions.SnsAction(topic)

    def visit(self, node: IConstruct) -> None:
        if isinstance(node, cloudwatch.Alarm):
            node.add_alarm_action(self._action)
