"""The policies the local stack runs each function under are the synthesized ones, read back from the constructs."""

from __future__ import annotations

import dataclasses
import json

import pytest
from aws_cdk import aws_s3 as s3

from stacks.function_policies import function_policies, resolve_statements, synthesize_function_policies
from tests.infra.conftest import Synthesized
from tests.infra.test_artifacts import ARTIFACT_BUCKET_ID


def _object_actions(statements: list[dict], pattern: str) -> set[str]:
    """Actions of the statements whose resources include `<bucket arn><pattern>`."""
    found: set[str] = set()
    for statement in statements:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if any(json.dumps(pattern) in json.dumps(resource) for resource in resources):
            found |= set(statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]])
    return found


def test_every_api_and_batch_function_has_its_policy(synthesized: Synthesized) -> None:
    policies = function_policies(synthesized.stacks)
    served = {entry.name for entry in synthesized.config.served_models}
    assert set(policies) == {(kind, model) for kind in ("api", "batch") for model in served}
    for (kind, model), policy in policies.items():
        assert policy.statements, (kind, model)
        assert "Fn::GetStackOutput" not in json.dumps(policy.statements)
        assert "AWS::Logs::LogGroup" in policy.references.values()


def test_batch_statements_reference_the_pinned_bucket_and_the_models_queue(synthesized: Synthesized) -> None:
    platform = synthesized.config.catalog.platform
    policy = function_policies(synthesized.stacks)[("batch", "sentiment")]
    assert policy.references[f"{ARTIFACT_BUCKET_ID}.Arn"] == "AWS::S3::Bucket"
    assert sorted(policy.references.values()) == ["AWS::Logs::LogGroup", "AWS::S3::Bucket", "AWS::SQS::Queue"]
    output = _object_actions(policy.statements, f"/{platform.batch_output_prefix}sentiment/*")
    assert {"s3:GetObject*", "s3:PutObject", "s3:Abort*"} <= output


def test_gpu_front_functions_reference_their_endpoint(synthesized: Synthesized) -> None:
    endpoints = set(synthesized.resources("gpu", "AWS::SageMaker::Endpoint"))
    for entry in synthesized.config.sagemaker_models:
        references = function_policies(synthesized.stacks)[("api", entry.name)].references
        # Ref of AWS::SageMaker::Endpoint is its ARN
        assert {ref for ref, kind in references.items() if kind == "AWS::SageMaker::Endpoint"} <= endpoints
        assert "AWS::SageMaker::Endpoint" in references.values()


def test_resolved_statements_are_plain_strings_with_the_given_arns(synthesized: Synthesized) -> None:
    policy = function_policies(synthesized.stacks)[("batch", "sentiment")]
    values = {reference: f"arn:aws:local:::{reference}" for reference in policy.references}
    resolved = json.dumps(resolve_statements(policy.statements, values))
    assert "Fn::" not in resolved
    assert '"Ref"' not in resolved
    assert f"arn:aws:local:::{ARTIFACT_BUCKET_ID}.Arn/batch/output/sentiment/*" in resolved
    missing = {key: value for key, value in values.items() if not key.startswith(ARTIFACT_BUCKET_ID)}
    with pytest.raises(KeyError, match=ARTIFACT_BUCKET_ID):
        resolve_statements(policy.statements, missing)


def test_a_grant_removed_from_the_construct_leaves_the_returned_statements(
    synthesized: Synthesized, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read from the constructs, not copied: without the bucket's grant_put the scorer's writes are gone."""
    # given: the constructs, with Bucket.grant_put doing nothing
    platform = synthesized.config.catalog.platform
    monkeypatch.setattr(s3.Bucket, "grant_put", lambda *_args, **_kwargs: None)
    config = dataclasses.replace(synthesized.config, gpu_endpoints=False)
    # when
    policy = synthesize_function_policies(config)[("batch", "sentiment")]
    # then
    output = _object_actions(policy.statements, f"/{platform.batch_output_prefix}sentiment/*")
    assert "s3:GetObject*" in output
    assert not {"s3:PutObject", "s3:Abort*"} & output
