"""moto's server on a local port, and the bucket, queues and notification the CDK stacks declare, made through boto3."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog import Platform
from functions.runtime.package import read_manifest
from local.clients import client
from local.config import HOST

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LocalResources:
    """What the local stack created, under the names the handlers and the printed examples use."""

    endpoint_url: str
    bucket: str
    queue_url: str
    queue_arn: str
    dead_letter_queue_url: str
    dead_letter_queue_arn: str


class MotoServer:
    """moto in server mode, in a process of its own: its IAM setting and its state belong to this stack alone.

    Any process (aws cli, boto3, the functions) reaches it over HTTP. In-process servers would share moto's global
    backends and settings with every other moto user in the process (tests, a second stack).
    """

    def __init__(self, port: int) -> None:
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # werkzeug's access log: one line per AWS call
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto did not start on port {self.port}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def free_port() -> int:
    """A port nothing listens on now (port 0: any free port, as for the other servers)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


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
