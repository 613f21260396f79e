"""IAM in the local stack: an administrator for the person at the keyboard, a role per function, and moto enforcing.

Everything is created while moto still answers unauthenticated requests; `enforce` then makes moto check every
request's signature and the caller's policies, as AWS does.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from typing import Any

from local.clients import client
from local.config import Credentials

ADMIN_USER = "local-admin"
LAMBDA_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
EVERYTHING = [{"Effect": "Allow", "Action": "*", "Resource": "*"}]


def policy_document(statements: Sequence[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def create_admin(aws_url: str) -> Credentials:
    """An IAM user allowed everything: what the demo, the tests and a person at the keyboard sign requests with."""
    iam = client("iam", aws_url)
    iam.create_user(UserName=ADMIN_USER)
    iam.put_user_policy(UserName=ADMIN_USER, PolicyName="everything", PolicyDocument=policy_document(EVERYTHING))
    key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def role_credentials(aws_url: str, role_name: str, statements: Sequence[dict[str, Any]]) -> Credentials:
    """A function's execution role with exactly `statements`, and the temporary credentials Lambda would hand it."""
    iam = client("iam", aws_url)
    role_arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST_POLICY))["Role"][
        "Arn"
    ]
    iam.put_role_policy(RoleName=role_name, PolicyName="synthesized", PolicyDocument=policy_document(statements))
    issued = client("sts", aws_url).assume_role(RoleArn=role_arn, RoleSessionName=role_name, DurationSeconds=43200)
    keys = issued["Credentials"]
    return Credentials(keys["AccessKeyId"], keys["SecretAccessKey"], keys["SessionToken"])


def enforce(aws_url: str) -> None:
    """From now on moto checks every request's signature and the caller's policies (INITIAL_NO_AUTH_ACTION_COUNT 0).

    The setting lives in moto's own process, which belongs to one stack, so nothing has to be restored.
    """
    request = urllib.request.Request(
        f"{aws_url}/moto-api/reset-auth", data=b"0", headers={"content-type": "text/plain"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
