"""Batch outputs written with S3 multipart upload: nothing is visible until complete, an abort leaves nothing.

Each run writes under its own run id, and completes with If-None-Match, so no run ever replaces another's object.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

logger = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024  # S3 parts must be >= 5 MiB except the last
MIN_PART_SIZE = 5 * 1024 * 1024
READ_CHUNK = 1024 * 1024


class MultipartWriter:
    """Buffered multipart upload: nothing is visible until `complete`; `abort` leaves no object behind."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        content_type: str = "application/x-ndjson",
        *,
        resume: tuple[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        """A new upload, or with `resume` (upload id, parts so far) one an earlier invocation started and parked."""
        self.s3, self.bucket, self.key = s3, bucket, key
        if resume is None:
            self.upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)["UploadId"]
            self.parts: list[dict[str, Any]] = []
        else:
            self.upload_id, self.parts = resume[0], list(resume[1])
        self.buffer = bytearray()
        self.bytes_written = 0

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= PART_SIZE:
            self._upload_part()

    def _upload_part(self) -> None:
        number = len(self.parts) + 1
        response = self.s3.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=bytes(self.buffer)
        )
        self.parts.append({"PartNumber": number, "ETag": response["ETag"]})
        self.bytes_written += len(self.buffer)
        self.buffer.clear()

    def append_object(self, key: str, size: int) -> None:
        """Append an object of this bucket: copied by S3 itself (UploadPartCopy) where it can be a part of its own
        (>= 5 MiB), streamed through this buffer otherwise, so a big output never passes through the function."""
        taken = 0
        if self.buffer and size >= MIN_PART_SIZE:  # top the buffer up to one part, then copy the rest
            taken = min(size, PART_SIZE - len(self.buffer))
            self._stream(key, 0, taken)
        if size - taken >= MIN_PART_SIZE and not self.buffer:
            number = len(self.parts) + 1
            response = self.s3.upload_part_copy(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": key},
                CopySourceRange=f"bytes={taken}-{size - 1}",
            )
            self.parts.append({"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]})
            self.bytes_written += size - taken
        elif size > taken:
            self._stream(key, taken, size)

    def _stream(self, key: str, start: int, stop: int) -> None:
        body = self.s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{stop - 1}")["Body"]
        for chunk in body.iter_chunks(READ_CHUNK):
            self.write(chunk)

    def park(self, key: str) -> int:
        """Hand the upload on to a later invocation: the buffer (under one part, so not yet uploadable) is saved as
        the object `key`; returns its size. The upload id and `parts` are the rest of what resuming needs."""
        size = len(self.buffer)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=bytes(self.buffer))
        self.buffer.clear()
        return size

    def complete(self) -> None:
        if self.buffer or not self.parts:
            self._upload_part()  # the last part may be small (or empty, for a file with no rows of this kind)
        self.s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
            IfNoneMatch="*",
        )

    def abort(self) -> None:
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except ClientError:
            logger.exception("could not abort multipart upload of %s", self.key)
