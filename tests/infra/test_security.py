"""What a reviewer checks across every stack: IAM wildcards, cdk-nag (AwsSolutions + Serverless), cfn-lint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk.assertions import Annotations, Match

from catalog import ROOT
from tests.infra.conftest import Synthesized

# Actions that have no resource-level permissions in IAM; "*" is allowed for these and nothing else.
RESOURCELESS_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
}
NAG_RULES = Match.string_like_regexp("AwsSolutions-.*|Serverless-.*")


def _statements(synthesized: Synthesized) -> list[tuple[str, str, dict]]:
    """Every IAM statement in every template: (stack, logical id, statement), inline role policies included."""
    found = []
    for kind, template in synthesized.templates.items():
        for logical_id, resource in template.to_json()["Resources"].items():
            documents = []
            if resource["Type"] == "AWS::IAM::Policy":
                documents.append(resource["Properties"]["PolicyDocument"])
            if resource["Type"] == "AWS::IAM::Role":
                documents += [policy["PolicyDocument"] for policy in resource["Properties"].get("Policies", [])]
            for document in documents:
                found += [(kind, logical_id, statement) for statement in document["Statement"]]
    return found


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [value]


def test_no_statement_grants_every_action(synthesized: Synthesized) -> None:
    statements = _statements(synthesized)
    assert statements
    broad = [
        (kind, logical_id, action)
        for kind, logical_id, statement in statements
        for action in _as_list(statement["Action"])
        if action in {"*", "s3:*", "sagemaker:*", "sqs:*", "logs:*", "iam:*"}
    ]
    assert broad == []


def test_resource_star_only_where_iam_offers_nothing_narrower(synthesized: Synthesized) -> None:
    unscoped = [
        (kind, logical_id, sorted(set(_as_list(statement["Action"])) - RESOURCELESS_ACTIONS))
        for kind, logical_id, statement in _statements(synthesized)
        if "*" in _as_list(statement["Resource"]) and set(_as_list(statement["Action"])) - RESOURCELESS_ACTIONS
    ]
    assert unscoped == []


def test_put_metric_data_is_namespace_conditioned(synthesized: Synthesized) -> None:
    metric_statements = [
        statement
        for _, _, statement in _statements(synthesized)
        if "cloudwatch:PutMetricData" in _as_list(statement["Action"])
    ]
    assert metric_statements
    assert all("cloudwatch:namespace" in json.dumps(statement.get("Condition", {})) for statement in metric_statements)


@pytest.mark.parametrize("kind", ["artifacts", "alarm_topic", "gpu", "api", "batch", "monitoring"])
def test_cdk_nag_reports_no_unsuppressed_error_or_warning(synthesized: Synthesized, kind: str) -> None:
    stack = getattr(synthesized.stacks, kind)
    annotations = Annotations.from_stack(stack)
    assert annotations.find_error("*", NAG_RULES) == []
    assert annotations.find_warning("*", NAG_RULES) == []


def test_every_nag_suppression_gives_a_specific_reason(synthesized: Synthesized) -> None:
    reasons = []
    for template in synthesized.templates.values():
        for resource in template.to_json()["Resources"].values():
            for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
                reasons.append((rule["id"], rule["reason"]))
    assert reasons, "the stacks acknowledge some findings; their reasons must be recorded"
    vague = [(rule, reason) for rule, reason in reasons if len(reason) < 40]
    assert vague == []


def test_cfn_lint_finds_nothing_in_any_template(synthesized: Synthesized) -> None:
    templates = sorted(str(path) for path in Path(synthesized.outdir).glob("*.template.json"))
    assert len(templates) == len(synthesized.templates)
    executable = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or "cfn-lint"
    # Run from the repository root so .cfnlintrc.yaml (the same settings as `make synth`) applies.
    result = subprocess.run([executable, *templates], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_nag_wiring_refuses_a_non_compliant_stack() -> None:
    """The checks are live: with the app's context, an unencrypted queue without a DLQ fails synthesis."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_sqs as sqs

    from stacks.nag import apply_checks
    from tests.infra.conftest import cdk_context

    app = App(context=cdk_context())
    stack = Stack(app, "NonCompliant")
    sqs.Queue(stack, "Queue", encryption=sqs.QueueEncryption.UNENCRYPTED)
    apply_checks([stack])
    with pytest.raises(RuntimeError, match=r"AwsSolutions-SQS3|Serverless-SQSRedrivePolicy"):
        Annotations.from_stack(stack)
