"""The SQS message shapes the batch function accepts, built on Powertools' parser models: S3's notifications, and the
tasks a big file's invocations send to their own queue (a shard to score, or the rest of a plan).

Powertools' S3Model requires userIdentity, requestParameters, responseElements and bucket.ownerIdentity, which real
S3 always sends but moto (the local stack) leaves out; nothing here reads them, so these subclasses make them optional.
"""

from __future__ import annotations

from typing import Annotated, Literal

from aws_lambda_powertools.utilities.parser.models import S3Model, S3RecordModel, SqsRecordModel
from aws_lambda_powertools.utilities.parser.models.s3 import (
    S3Bucket,
    S3Identity,
    S3Message,
    S3OwnerIdentify,
    S3RequestParameters,
    S3ResponseElements,
)
from pydantic import BaseModel, ConfigDict, Field, Json


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


class ShardTask(BaseModel):
    """Our own message: score the byte range [start, end) of a planned file, plan it on from `start`, or go on with
    its parked assembly (no `Records`, so it is never taken for a notification); the job record at `job` says which
    file, model and run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["score", "plan", "assemble"]
    bucket: str
    job: str
    shard: Annotated[int, Field(ge=0)]
    start: Annotated[int, Field(ge=0)]
    end: Annotated[int, Field(ge=0)]
    line: Annotated[int, Field(ge=1)]


class BatchMessage(SqsRecordModel):
    """An SQS record whose body is an S3 event notification, the s3:TestEvent, or one of our shard tasks."""

    body: Json[S3Notification | S3TestEvent | ShardTask]  # type: ignore[assignment]
