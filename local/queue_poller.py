"""The SQS event source mapping, done locally: long-poll, invoke with real SQS records, delete only the successes."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from local.config import REGION
from local.lambda_runtime import FunctionAlias, FunctionError, LocalFunction

log = logging.getLogger("local.poller")


def lambda_record(message: dict[str, Any], queue_arn: str, region: str = REGION) -> dict[str, Any]:
    """One SQS message as Lambda hands it to a function (camelCase keys, message attributes re-shaped)."""
    attributes = {
        key: str(message.get("Attributes", {}).get(key, ""))
        for key in ("ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp")
    }
    message_attributes = {
        name: {
            "stringValue": value.get("StringValue"),
            "binaryValue": value.get("BinaryValue"),
            "stringListValues": value.get("StringListValues", []),
            "binaryListValues": value.get("BinaryListValues", []),
            "dataType": value.get("DataType", "String"),
        }
        for name, value in message.get("MessageAttributes", {}).items()
    }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def failed_ids(result: Any, message_ids: list[str]) -> set[str]:
    """The message ids a partial batch response reports; a malformed response fails the whole batch, as in Lambda."""
    if result is None or (isinstance(result, dict) and not result.get("batchItemFailures")):
        return set()
    try:
        ids = {str(item["itemIdentifier"]) for item in result["batchItemFailures"]}
    except (KeyError, TypeError):
        log.error("malformed batchItemFailures %r: the whole batch is retried", result)
        return set(message_ids)
    if not ids <= set(message_ids) or "" in ids:
        log.error("batchItemFailures names unknown ids %r: the whole batch is retried", ids - set(message_ids))
        return set(message_ids)
    return ids


@dataclass
class PollerStats:
    """Counters the demo prints and the tests read."""

    receives: int = 0
    invocations: int = 0
    deleted: int = 0
    retried: int = 0
    handler_errors: int = 0


class QueuePoller:
    """A thread feeding batches of up to `batch_size` messages to the batch function until stopped."""

    def __init__(
        self,
        sqs: Any,
        *,
        queue_url: str,
        queue_arn: str,
        function: LocalFunction | FunctionAlias,
        batch_size: int,
        wait_s: int,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.function = function
        self.batch_size = batch_size
        self.wait_s = wait_s
        self.stats = PollerStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-queue-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop polling; a batch already in the handler finishes (bounded by `timeout_s`)."""
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            log.warning("the batch function is still running after %.0f s; leaving it behind", timeout_s)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self.poll_once()
                backoff = 0.5
            except (BotoCoreError, ClientError) as error:
                if self._stop.is_set():
                    return
                log.warning("polling %s failed (%s); retrying in %.1f s", self.queue_url, error, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def poll_once(self) -> int:
        """One receive and, if it brought messages, one invocation; returns how many messages were received."""
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=self.wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        self.stats.receives += 1
        if not messages:
            return 0
        event = {"Records": [lambda_record(message, self.queue_arn) for message in messages]}
        ids = [message["MessageId"] for message in messages]
        started = time.perf_counter()
        try:
            result = self.function.invoke(event)
            failed = failed_ids(result, ids)
        except FunctionError as error:  # an unhandled error or a timeout: Lambda leaves the whole batch on the queue
            log.warning("%s: all %d messages stay on the queue", error, len(messages))
            self.stats.handler_errors += 1
            failed = set(ids)
        self.stats.invocations += 1
        done = [message for message in messages if message["MessageId"] not in failed]
        for message in done:  # one by one: moto authorises DeleteMessageBatch as its own action, IAM as DeleteMessage
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        self.stats.deleted += len(done)
        self.stats.retried += len(failed)
        log.info(
            "batch of %d message(s): %d done, %d left for retry (%.0f ms)",
            len(messages),
            len(done),
            len(failed),
            (time.perf_counter() - started) * 1000,
        )
        return len(messages)
