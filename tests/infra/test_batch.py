"""Batch stack: per-model queue, dead-letter queue and scorer, fed only by files under batch/input/<model>/."""

from __future__ import annotations

import json

from catalog import Target
from functions.runtime.settings import Settings
from stacks.config import API_HANDLER, BATCH_HANDLER
from tests.infra.conftest import Synthesized, literal_environment


def _by_prefix(resources: dict[str, dict], suffix: str) -> dict[str, dict]:
    return {logical_id: body for logical_id, body in resources.items() if suffix in logical_id}


def test_queues_are_encrypted_tls_only_and_redrive_to_a_dead_letter_queue(synthesized: Synthesized) -> None:
    platform = synthesized.config.catalog.platform
    queues = synthesized.resources("batch", "AWS::SQS::Queue")
    work_queues = {key: body for key, body in queues.items() if "DeadLetter" not in key}
    dead_letter_ids = {key for key in queues if "DeadLetter" in key}
    assert len(work_queues) == len(synthesized.config.served_models)
    assert platform.queue_max_receive_count >= 5
    for key, queue in work_queues.items():
        properties = queue["Properties"]
        assert properties["SqsManagedSseEnabled"] is True, key
        assert properties["RedrivePolicy"]["maxReceiveCount"] == platform.queue_max_receive_count
        assert properties["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0] in dead_letter_ids
        assert properties["VisibilityTimeout"] >= 6 * platform.batch_function_timeout_s
    for policy in synthesized.resources("batch", "AWS::SQS::QueuePolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"]["Bool"]["aws:SecureTransport"] == "false" for s in statements
        )


def test_dead_letter_depth_alarms(synthesized: Synthesized) -> None:
    alarms = synthesized.resources("batch", "AWS::CloudWatch::Alarm").values()
    depth = [a for a in alarms if a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"]
    assert len(depth) == len(synthesized.config.served_models)
    assert all(a["Properties"]["Threshold"] == 1 for a in depth)


def test_notifications_fire_only_for_batch_input_prefixes(synthesized: Synthesized) -> None:
    platform = synthesized.config.catalog.platform
    (notifications,) = synthesized.resources("batch", "Custom::S3BucketNotifications").values()
    configuration = notifications["Properties"]["NotificationConfiguration"]
    assert set(configuration) == {"QueueConfigurations"}
    prefixes = set()
    for queue_configuration in configuration["QueueConfigurations"]:
        assert queue_configuration["Events"] == ["s3:ObjectCreated:*"]
        (rule,) = queue_configuration["Filter"]["Key"]["FilterRules"]
        assert rule["Name"] == "prefix"
        prefixes.add(rule["Value"])
    assert prefixes == {f"{platform.batch_input_prefix}{entry.name}/" for entry in synthesized.config.served_models}
    assert all(not prefix.startswith(platform.batch_output_prefix) for prefix in prefixes)


def test_event_sources_report_item_failures(synthesized: Synthesized) -> None:
    platform = synthesized.config.catalog.platform
    mappings = synthesized.resources("batch", "AWS::Lambda::EventSourceMapping").values()
    assert len(mappings) == len(synthesized.config.served_models)
    for mapping in mappings:
        assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["Properties"]["BatchSize"] == platform.queue_batch_size
        # the brake on a fanned-out file: at most this many invocations of one model's scorer at once
        assert mapping["Properties"]["ScalingConfig"] == {"MaximumConcurrency": platform.batch_max_concurrency}


def test_scorers_may_send_shard_tasks_to_their_own_queue_only(synthesized: Synthesized) -> None:
    platform = synthesized.config.catalog.platform
    queues = {key for key in synthesized.resources("batch", "AWS::SQS::Queue") if "DeadLetter" not in key}
    policies = synthesized.resources("batch", "AWS::IAM::Policy")
    for scorer in (
        b for b in synthesized.resources("batch", "AWS::Lambda::Function").values() if "ImageConfig" in b["Properties"]
    ):
        variables = scorer["Properties"]["Environment"]["Variables"]
        assert variables["BATCH_SHARD_BYTES"] == str(platform.batch_shard_bytes)
        (own_queue,) = [queue for queue in queues if variables["BATCH_QUEUE_URL"] == {"Ref": queue}]
        role = scorer["Properties"]["Role"]["Fn::GetAtt"][0]
        (policy,) = [p for p in policies.values() if {"Ref": role} in p["Properties"]["Roles"]]
        senders = [
            s["Resource"]
            for s in policy["Properties"]["PolicyDocument"]["Statement"]
            if "sqs:SendMessage" in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
        ]
        assert senders == [{"Fn::GetAtt": [own_queue, "Arn"]}]


def test_scorers_run_the_batch_handler_from_the_api_image(synthesized: Synthesized) -> None:
    platform = synthesized.config.catalog.platform
    scorers = {
        body["Properties"]["Description"].split(" ")[0]: body["Properties"]
        for body in synthesized.resources("batch", "AWS::Lambda::Function").values()
        if body["Properties"].get("PackageType") == "Image"
    }
    api = {
        body["Properties"]["Description"].split(" ")[0]: body["Properties"]
        for body in synthesized.resources("api", "AWS::Lambda::Function").values()
    }
    assert set(scorers) == set(api)
    for name, scorer in scorers.items():
        assert scorer["ImageConfig"]["Command"] == [BATCH_HANDLER]
        assert api[name]["ImageConfig"]["Command"] == [API_HANDLER]
        # One image per model: same asset hash behind both functions.
        assert scorer["Code"]["ImageUri"] == api[name]["Code"]["ImageUri"]
        assert scorer["Timeout"] == platform.batch_function_timeout_s
        assert scorer["MemorySize"] == platform.batch_function_memory_mb
        variables = scorer["Environment"]["Variables"]
        assert variables["BATCH_OUTPUT_PREFIX"] == platform.batch_output_prefix
        assert variables["BATCH_ROWS_PER_INFERENCE"] == str(platform.batch_rows_per_inference)
        assert "BATCH_BUCKET" in variables
        assert json.loads(variables["CAPTURE_RATES"]) == {}  # only the API functions capture
        settings = Settings.from_env(literal_environment(scorer))
        assert settings.function_timeout_s == scorer["Timeout"]
        entry = synthesized.config.catalog.model(name)
        assert settings.sagemaker_max_batch == (
            {name: entry.sagemaker.max_batch_size} if entry.target is Target.SAGEMAKER else {}
        )


def test_scorers_read_their_input_and_read_write_their_output_prefix_only(synthesized: Synthesized) -> None:
    """The scorer reads <output>/<file>.summary.json before scoring and writes outputs by multipart upload: under
    IAM, GetObject, PutObject (parts, complete, conditional writes) and AbortMultipartUpload on its output prefix."""
    platform = synthesized.config.catalog.platform
    for name in (entry.name for entry in synthesized.config.served_models):
        (policy,) = _by_prefix(
            synthesized.resources("batch", "AWS::IAM::Policy"), f"{name.capitalize()}Scorer"
        ).values()
        object_patterns: dict[str, set[str]] = {}
        bucket_actions: set[str] = set()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for action in (a for a in actions if a.startswith("s3:")):
                for resource in resources:
                    if "Fn::Join" in resource:
                        object_patterns.setdefault(action, set()).add(resource["Fn::Join"][1][-1])
                    else:
                        bucket_actions.add(action)
        input_objects = f"/{platform.batch_input_prefix}{name}/*"
        output_objects = f"/{platform.batch_output_prefix}{name}/*"
        assert object_patterns["s3:GetObject*"] == {input_objects, output_objects}
        assert object_patterns["s3:PutObject"] == {output_objects}
        assert object_patterns["s3:Abort*"] == {output_objects}  # AbortMultipartUpload
        assert object_patterns["s3:DeleteObject*"] == {output_objects}  # a fanned-out file's working objects
        # ListBucket on the bucket: a summary not yet written answers 404 NoSuchKey, not 403 AccessDenied.
        assert "s3:List*" in bucket_actions
        assert json.dumps(policy).count("s3:*") == 0
