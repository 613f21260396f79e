"""Artifacts stack: what a security reviewer checks on the bucket, plus the logical ids that must never change."""

from __future__ import annotations

from aws_cdk.assertions import Match

from tests.infra.conftest import Synthesized

# Renaming these replaces the buckets (and, with RETAIN, orphans the data): pin them.
ARTIFACT_BUCKET_ID = "ArtifactBucket7410C9EF"
ACCESS_LOG_BUCKET_ID = "AccessLogBucketDA470295"
BLOCK_ALL = {
    "BlockPublicAcls": True,
    "BlockPublicPolicy": True,
    "IgnorePublicAcls": True,
    "RestrictPublicBuckets": True,
}


def test_bucket_logical_ids_are_pinned(synthesized: Synthesized) -> None:
    buckets = synthesized.resources("artifacts", "AWS::S3::Bucket")
    assert set(buckets) == {ARTIFACT_BUCKET_ID, ACCESS_LOG_BUCKET_ID}


def test_buckets_are_retained_private_and_encrypted(synthesized: Synthesized) -> None:
    for logical_id, bucket in synthesized.resources("artifacts", "AWS::S3::Bucket").items():
        assert bucket["DeletionPolicy"] == "Retain", logical_id
        assert bucket["UpdateReplacePolicy"] == "Retain", logical_id
        assert bucket["Properties"]["PublicAccessBlockConfiguration"] == BLOCK_ALL, logical_id
        encryption = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert encryption[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert synthesized.stacks.artifacts.termination_protection is True


def test_every_bucket_policy_denies_plain_http(synthesized: Synthesized) -> None:
    policies = synthesized.resources("artifacts", "AWS::S3::BucketPolicy")
    protected = {policy["Properties"]["Bucket"]["Ref"] for policy in policies.values()}
    assert protected == {ARTIFACT_BUCKET_ID, ACCESS_LOG_BUCKET_ID}
    for policy in policies.values():
        denials = [
            statement
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            if statement["Effect"] == "Deny"
            and statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        ]
        assert denials, policy
        assert all(statement["Action"] == "s3:*" and statement["Principal"] == {"AWS": "*"} for statement in denials)


def test_artifact_bucket_versions_logs_and_expires_batch_outputs(synthesized: Synthesized) -> None:
    platform = synthesized.config.catalog.platform
    synthesized.template("artifacts").has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": {"Status": "Enabled"},
            "LoggingConfiguration": {"DestinationBucketName": {"Ref": ACCESS_LOG_BUCKET_ID}},
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Prefix": platform.batch_output_prefix,
                                "ExpirationInDays": platform.batch_output_expiry_days,
                                "Status": "Enabled",
                            }
                        )
                    ]
                )
            },
        },
    )


def test_training_role_reaches_only_its_prefixes(synthesized: Synthesized) -> None:
    platform = synthesized.config.catalog.platform
    template = synthesized.template("artifacts")
    template.has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Statement": [Match.object_like({"Principal": {"Service": "sagemaker.amazonaws.com"}})]
            }
        },
    )
    (policy,) = template.find_resources("AWS::IAM::Policy").values()
    object_arns = [
        resource["Fn::Join"][1][1]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for resource in _as_list(statement["Resource"])
        if isinstance(resource, dict) and "Fn::Join" in resource and statement["Action"][0].startswith("s3:")
    ]
    assert sorted(set(object_arns)) == sorted({f"/{platform.datasets_prefix}*", f"/{platform.models_prefix}*"})


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [value]
