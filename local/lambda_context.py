"""A Lambda context and a one-at-a-time invoker: the handlers see what the Lambda runtime would hand them."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from local.config import ACCOUNT_ID, REGION

Handler = Callable[[dict[str, Any], Any], Any]

log = logging.getLogger("local")


@dataclass
class LambdaContext:
    """The attributes Powertools and the handlers read from the real context object."""

    function_name: str
    memory_limit_in_mb: int
    timeout_s: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"{time.strftime('%Y/%m/%d')}/[$LATEST]local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


class LocalFunction:
    """One warm Lambda instance: invocations run one at a time, as the real runtime never overlaps them."""

    def __init__(self, handler: Handler, *, function_name: str, memory_mb: int, timeout_s: int) -> None:
        self.handler = handler
        self.function_name = function_name
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.invocations = 0
        self._lock = threading.Lock()

    def invoke(self, event: dict[str, Any]) -> Any:
        context = LambdaContext(self.function_name, self.memory_mb, self.timeout_s)
        with self._lock:
            self.invocations += 1
            context.started = time.monotonic()
            result = self.handler(event, context)
        elapsed = time.monotonic() - context.started
        if elapsed > self.timeout_s:
            log.warning(
                "%s took %.1f s, over its %d s timeout: Lambda would have stopped it",
                self.function_name,
                elapsed,
                self.timeout_s,
            )
        return result
