"""The capture path of AWS, locally: the API function's log stream -> subscription filter -> Firehose -> S3.

The function process's stdout comes here line by line, as CloudWatch Logs receives it. Lines that are capture
records (the subscription filter `{ $.kind = "data_capture" }`) are buffered and written as newline-delimited objects
under <capture prefix><model>/<yyyy-mm-dd>/, with the delivery role's own credentials, as Firehose writes them; every
other line is passed on to this process's stdout, where the functions' logs always went.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from functions.runtime.capture import CAPTURE_KIND

log = logging.getLogger("local.firehose")

BUFFER_INTERVAL_S = 1.0  # Firehose buffers 60-900 s; locally a second, so a check right after traffic sees it
DELIVERY_STREAM = "model-serving-capture-local"


def delivery_statements(bucket: str, prefix: str) -> list[dict[str, Any]]:
    """The delivery role: write objects under the capture prefix, nothing else."""
    return [
        {
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": f"arn:aws:s3:::{bucket}/{prefix}*",
        }
    ]


class LocalFirehose:
    """Buffers capture records per model and delivers them every BUFFER_INTERVAL_S; `stop` delivers the rest."""

    def __init__(self, s3: Any, bucket: str, prefix: str) -> None:
        self.s3, self.bucket, self.prefix = s3, bucket, prefix
        self.delivered = 0
        self._buffer: dict[str, list[str]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-firehose", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def log_line(self, line: str) -> None:
        """One line of the function's stdout: a capture record is buffered, anything else printed."""
        if line.startswith("{") and f'"kind":"{CAPTURE_KIND}"' in line:
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and record.get("kind") == CAPTURE_KIND:
                with self._lock:
                    self._buffer[str(record.get("model"))].append(line)
                return
        sys.stdout.write(line if line.endswith("\n") else line + "\n")
        sys.stdout.flush()

    def _run(self) -> None:
        while not self._stop.wait(BUFFER_INTERVAL_S):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batches, self._buffer = self._buffer, defaultdict(list)
        now = datetime.now(UTC)
        for model, lines in batches.items():
            # Firehose's own object name: <prefix><stream>-<version>-<yyyy-MM-dd-HH-mm-ss>-<uuid>
            key = f"{self.prefix}{model}/{now:%Y-%m-%d}/{DELIVERY_STREAM}-1-{now:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}"
            body = "".join(line if line.endswith("\n") else line + "\n" for line in lines).encode()
            try:
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
            except Exception as error:  # Firehose retries, then gives up on a batch; so does this stand-in
                log.warning("capture delivery of %d records to %s failed: %s", len(lines), key, error)
                continue
            self.delivered += len(lines)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.flush()
