"""moto's server on a local port, and the bucket, queues and notification the CDK stacks declare, made through boto3."""

from __future__ import annotations

import json
import logging
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

from catalog import Platform
from functions.runtime.package import read_manifest
from local.config import HOST, REGION

# Short timeouts: everything is on this machine, so a slow answer means something is wrong, not busy.
CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"})


@dataclass(frozen=True)
class LocalResources:
    """What the local stack created, under the names the handlers and the printed examples use."""

    endpoint_url: str
    bucket: str
    queue_url: str
    queue_arn: str
    dead_letter_queue_url: str
    dead_letter_queue_arn: str


def start_moto(port: int) -> tuple[ThreadedMotoServer, str]:
    """moto in server mode, so that any process (aws cli, boto3, the handlers) reaches it over HTTP."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per AWS call drowns the output
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    host, bound_port = server.get_host_and_port()
    return server, f"http://{host}:{bound_port}"


def reset_moto(endpoint_url: str) -> None:
    """Empty moto's state: in-process servers share moto's global backends, so a second stack would find the first's."""
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def client(service: str, endpoint_url: str, access_key: str = "testing", secret_key: str = "testing") -> Any:
    """A real boto3 client pointed at the local endpoint, with its own credentials (never the process's chain)."""
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=CLIENT_CONFIG,
    )


def provision(
    endpoint_url: str,
    *,
    bucket: str,
    queue_name: str,
    dead_letter_queue_name: str,
    visibility_timeout_s: int,
    platform: Platform,
) -> LocalResources:
    """Bucket, batch queue with its dead-letter queue, and the S3→SQS notification for the batch input prefix only."""
    s3 = client("s3", endpoint_url)
    sqs = client("sqs", endpoint_url)
    s3.create_bucket(Bucket=bucket)
    dlq_url = sqs.create_queue(QueueName=dead_letter_queue_name)["QueueUrl"]
    dlq_arn = _queue_arn(sqs, dlq_url)
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": platform.queue_max_receive_count}
    queue_url = sqs.create_queue(
        QueueName=queue_name,
        Attributes={"VisibilityTimeout": str(visibility_timeout_s), "RedrivePolicy": json.dumps(redrive)},
    )["QueueUrl"]
    queue_arn = _queue_arn(sqs, queue_url)
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": platform.batch_input_prefix}]}},
                }
            ]
        },
    )
    return LocalResources(endpoint_url, bucket, queue_url, queue_arn, dlq_url, dlq_arn)


def upload_packages(endpoint_url: str, bucket: str, packages: dict[str, Path], platform: Platform) -> dict[str, str]:
    """Copy each package to models/<name>/<version>/ as the artifacts bucket holds it; returns name → S3 prefix."""
    s3 = client("s3", endpoint_url)
    prefixes: dict[str, str] = {}
    for name, folder in packages.items():
        version = read_manifest(folder).version
        prefix = f"{platform.models_prefix}{name}/{version}/"
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            s3.upload_file(str(path), bucket, prefix + path.relative_to(folder).as_posix())
        prefixes[name] = prefix
    return prefixes


def _queue_arn(sqs: Any, queue_url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
