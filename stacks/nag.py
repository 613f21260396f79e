"""cdk-nag on every stack, and the one helper through which every suppression passes with its reason."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from aws_cdk import Aspects, Stack
from aws_cdk.aws_s3 import IBucket
from cdk_nag import AwsSolutionsChecks, NagPackSuppression, NagSuppressions, RegexAppliesTo, ServerlessChecks
from constructs import IConstruct


def apply_checks(stacks: Iterable[Stack]) -> None:
    """Both packs report as error annotations at synth; the tests fail on any that is not suppressed."""
    for stack in stacks:
        Aspects.of(stack).add(AwsSolutionsChecks(verbose=True))
        Aspects.of(stack).add(ServerlessChecks(verbose=True))


def suppress(construct: IConstruct, rule: str, reason: str, applies_to: Sequence[str | RegexAppliesTo] = ()) -> None:
    """Acknowledge one rule on one construct (and its children) with a reason a reviewer can check."""
    NagSuppressions.add_resource_suppressions(
        construct,
        [NagPackSuppression(id=rule, reason=reason, applies_to=list(applies_to) or None)],
        apply_to_children=True,
    )


def suppress_path(stack: Stack, path: str, rule: str, reason: str, applies_to: Sequence[str] = ()) -> None:
    """For constructs CDK creates on our behalf (singleton handlers) that we hold no reference to."""
    NagSuppressions.add_resource_suppressions_by_path(
        stack,
        path,
        [NagPackSuppression(id=rule, reason=reason, applies_to=list(applies_to) or None)],
        apply_to_children=True,
    )


# What CDK's bucket grants expand to; each grant here is scoped to one prefix, which the suppression names.
S3_GRANT_ACTIONS = ("s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:Abort*", "s3:DeleteObject*")
XRAY_REASON = "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions (tracing is on)"


def object_resource(bucket: IBucket, pattern: str) -> RegexAppliesTo:
    """The cdk-nag finding for `<bucket arn>/<pattern>`, keyed on the bucket's pinned logical id.

    A regex, because the same finding reads `<Id.Arn>/...` in the owning stack and a cross-stack reference
    naming the same logical id in a consuming stack (and again after a re-synthesis).
    """
    cfn = bucket.node.default_child
    logical_id = Stack.of(bucket).resolve(Stack.of(bucket).get_logical_id(cfn))  # type: ignore[arg-type]
    return RegexAppliesTo(regex=f"/^Resource::.*{re.escape(logical_id)}.*\\/{_js_escape(pattern)}$/")


def _js_escape(text: str) -> str:
    """Escape a literal for an ECMA-262 regex literal (slashes included)."""
    return re.sub(r"([.*+?^${}()|\[\]\\/])", r"\\\1", text)


def suppress_prefix_grants(construct: IConstruct, bucket: IBucket, patterns: Sequence[str], why: str) -> None:
    """Bucket grants scoped to object prefixes: the wildcards are the CDK action groups and the prefix itself."""
    suppress(
        construct,
        "AwsSolutions-IAM5",
        f"CDK bucket grants (action groups {', '.join(S3_GRANT_ACTIONS)}) limited to {', '.join(patterns)}: {why}",
        applies_to=[
            *(f"Action::{action}" for action in S3_GRANT_ACTIONS),
            *(object_resource(bucket, pattern) for pattern in patterns),
        ],
    )
