"""Deploys that undo themselves: CodeDeploy moves a function's `live` alias to the new version as a canary, and moves
it back when that version's own alarms fire."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
from constructs import Construct

from catalog import ModelEntry
from stacks.alarms import canary_alarms
from stacks.model_function import ModelFunction

# CodeDeploy's Lambda deployments need these on the alias they shift (AWSCodeDeployRoleForLambdaLimited grants them
# on every function in the account; here they reach one function).
ALIAS_ACTIONS = ("lambda:GetAlias", "lambda:UpdateAlias", "lambda:GetProvisionedConcurrencyConfig")


class CanaryDeployment(Construct):
    """A deployment group per function: the catalog's canary share for its minutes, then all traffic; rolled back
    automatically when the new version errs or its p99 breaks the latency alarm, or when the deployment fails."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        function: ModelFunction,
        entry: ModelEntry,
        application: codedeploy.ILambdaApplication,
        timeout: Duration,
    ) -> None:
        super().__init__(scope, construct_id)
        fn, alias = function.function, function.alias
        self.alarms: list[cloudwatch.IAlarm] = list(canary_alarms(self, fn, alias, function.version, entry, timeout))
        self.config = codedeploy.LambdaDeploymentConfig(
            self,
            "Config",
            traffic_routing=codedeploy.TimeBasedCanaryTrafficRouting(
                interval=Duration.minutes(entry.canary.minutes), percentage=entry.canary.percent
            ),
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("codedeploy.amazonaws.com"),
            description=f"CodeDeploy shifts {entry.name}'s live alias and reads its canary alarms, nothing else",
        )
        # The alias ARN spelt out, not referenced: the alias's update policy names the group, which waits for this.
        alias_arn = f"{fn.function_arn}:{alias.alias_name}"
        self.role.add_to_policy(
            iam.PolicyStatement(actions=list(ALIAS_ACTIONS), resources=[fn.function_arn, alias_arn])
        )
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["cloudwatch:DescribeAlarms"], resources=[a.alarm_arn for a in self.alarms])
        )
        self.group = codedeploy.LambdaDeploymentGroup(
            self,
            "Group",
            alias=alias,
            application=application,
            deployment_config=self.config,
            alarms=self.alarms,
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True
            ),
            # The group would attach AWSCodeDeployRoleForLambdaLimited (UpdateAlias on every function): it gets a
            # view of the role that ignores that, and the role holds the statements above.
            role=self.role.without_policy_updates(),
        )
        self.group.node.add_dependency(self.role)
