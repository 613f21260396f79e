"""The SQS message shapes the batch function accepts, built on Powertools' parser models.

Powertools' S3Model requires userIdentity, requestParameters, responseElements and bucket.ownerIdentity, which real
S3 always sends but moto (the local stack) leaves out; nothing here reads them, so these subclasses make them optional.
"""

from __future__ import annotations

from typing import Literal

from aws_lambda_powertools.utilities.parser.models import S3Model, S3RecordModel, SqsRecordModel
from aws_lambda_powertools.utilities.parser.models.s3 import (
    S3Bucket,
    S3Identity,
    S3Message,
    S3OwnerIdentify,
    S3RequestParameters,
    S3ResponseElements,
)
from pydantic import BaseModel, Json


class S3TestEvent(BaseModel):
    """What S3 (and moto) posts to the queue when a notification is configured: nothing to score."""

    Service: str
    Event: Literal["s3:TestEvent"]
    Bucket: str
    Time: str | None = None
    RequestId: str | None = None
    HostId: str | None = None


class NotificationBucket(S3Bucket):
    ownerIdentity: S3OwnerIdentify | None = None  # type: ignore[assignment]  # noqa: N815 (the S3 field name)


class NotificationMessage(S3Message):
    bucket: NotificationBucket  # type: ignore[assignment]


class NotificationRecord(S3RecordModel):
    userIdentity: S3Identity | None = None  # type: ignore[assignment]  # noqa: N815
    requestParameters: S3RequestParameters | None = None  # type: ignore[assignment]  # noqa: N815
    responseElements: S3ResponseElements | None = None  # type: ignore[assignment]  # noqa: N815
    s3: NotificationMessage  # type: ignore[assignment]


class S3Notification(S3Model):
    Records: list[NotificationRecord]  # type: ignore[assignment]


class S3NotificationMessage(SqsRecordModel):
    """An SQS record whose body is an S3 event notification, or the s3:TestEvent."""

    body: Json[S3Notification | S3TestEvent]  # type: ignore[assignment]
