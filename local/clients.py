"""boto3 clients for the local stack, each signed with an identity of its own (never the process's credential chain).

boto3's default session caches whatever credentials it found first; a client built from explicit keys is the only
way for two functions in one machine to act as two IAM identities.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from local.config import BOOTSTRAP, REGION, Credentials

# Short timeouts: everything is on this machine, so a slow answer means something is wrong, not busy.
CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"})


def client(
    service: str, endpoint_url: str, credentials: Credentials = BOOTSTRAP, config: Config = CLIENT_CONFIG
) -> Any:
    """A real boto3 client for `service` at the local endpoint, signing as `credentials`."""
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        aws_session_token=credentials.session_token,
        config=config,
    )
