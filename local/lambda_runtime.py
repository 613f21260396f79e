"""Lambda's execution environment, locally: each function in a process of its own, under its own credentials.

A process per function is what makes the local stack as strict as Lambda: the function sees only the credentials of
its role (so moto enforces the role's IAM policy), and an invocation that runs past its timeout is stopped by
killing the process, after which the next invocation pays a cold start, as in Lambda.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

from functions.runtime.settings import Settings
from local.config import Credentials
from local.lambda_context import LambdaContext

log = logging.getLogger("local")

INIT_TIMEOUT_S = 180.0  # generous: loading and warming three models on a busy 2-core machine
FunctionKind = Literal["api", "batch"]


class FunctionError(Exception):
    """The invocation failed as Lambda reports it (an unhandled error or a timeout): the caller sees no result."""


class FunctionTimeoutError(FunctionError):
    """The invocation ran past the function's timeout and was stopped."""


class FunctionRetiredError(FunctionError):
    """The function version no longer takes invocations: its alias points at a newer one (see FunctionAlias)."""


@dataclass(frozen=True)
class FunctionSpec:
    """Everything a function's process needs to build it with the same factory its Lambda entry point calls."""

    kind: FunctionKind
    settings: Settings
    aws_url: str
    sagemaker_url: str
    credentials: Credentials
    function_name: str
    memory_mb: int
    timeout_s: float


def build_handler(spec: FunctionSpec) -> Any:
    """The function's handler, over clients built from its own credentials (never the process's credential chain)."""
    from functions.runtime.endpoint import MAX_CHUNK_WORKERS, endpoint_client_config
    from functions.runtime.models import load_models
    from local.clients import client

    config = endpoint_client_config(spec.settings.function_timeout_s, max_connections=MAX_CHUNK_WORKERS)
    models = load_models(spec.settings, client("sagemaker-runtime", spec.sagemaker_url, spec.credentials, config))
    if spec.kind == "api":
        from functions.api.app import create_api

        return create_api(spec.settings, models).lambda_handler
    from functions.batch.app import create_batch_handler

    s3, sqs = (client(service, spec.aws_url, spec.credentials) for service in ("s3", "sqs"))
    return create_batch_handler(spec.settings, models, s3, sqs).lambda_handler


def serve_invocations(spec: FunctionSpec, connection: Connection, stdout: Connection | None = None) -> None:
    """The function process: build the handler once (init), then answer invocations until told to stop.

    With `stdout`, the process's standard output goes into that pipe, line by line, as Lambda's goes to its logs.
    """
    if stdout is not None:
        os.dup2(stdout.fileno(), sys.stdout.fileno())
        stdout.close()
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        handler = build_handler(spec)
    except Exception as error:  # an init error: Lambda reports it on every invocation until the code is fixed
        connection.send(("init-error", f"{type(error).__name__}: {error}"))
        return
    connection.send(("ready", None))
    while (message := connection.recv()) is not None:
        event, context_fields = message
        try:
            connection.send(("ok", handler(event, LambdaContext(**context_fields))))
        except Exception as error:
            log.exception("%s: unhandled error", spec.function_name)
            connection.send(("error", f"{type(error).__name__}: {error}"))


class LocalFunction:
    """One warm execution environment: invocations run one at a time, and one past its timeout is killed."""

    def __init__(self, spec: FunctionSpec, log_line: Callable[[str], None] | None = None) -> None:
        """`log_line` receives each line the function prints (its log stream); None: it prints to this terminal."""
        self.spec = spec
        self.log_line = log_line
        self.invocations = 0
        self.timeouts = 0
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None
        self._retired = False

    @property
    def function_name(self) -> str:
        return self.spec.function_name

    @property
    def timeout_s(self) -> float:
        return self.spec.timeout_s

    @property
    def busy(self) -> bool:
        """Whether an invocation (or a cold start) is running now."""
        return self._lock.locked()

    @property
    def pid(self) -> int | None:
        """The execution environment's process (None between a crash or timeout and the next cold start)."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the execution environment and wait for its init (model loading) to finish."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork: the parent runs threads and onnxruntime pools
        parent, child = context.Pipe()
        logs, stdout = context.Pipe(duplex=False) if self.log_line else (None, None)
        process = context.Process(
            target=serve_invocations, args=(self.spec, child, stdout), name=self.spec.function_name, daemon=True
        )
        process.start()
        child.close()
        if logs is not None and stdout is not None:
            stdout.close()
            self._follow_logs(logs)
        try:
            if not parent.poll(INIT_TIMEOUT_S):
                process.kill()
                raise FunctionError(f"{self.function_name}: init did not finish within {INIT_TIMEOUT_S:.0f} s")
            status, detail = parent.recv()
        except EOFError:
            process.join(5)
            raise FunctionError(f"{self.function_name}: the runtime exited during init ({process.exitcode})") from None
        if status != "ready":
            process.join(5)
            raise FunctionError(f"{self.function_name}: init failed: {detail}")
        self._process, self._connection = process, parent

    def _follow_logs(self, logs: Connection) -> None:
        """Hand each line of the process's stdout (the raw bytes of the pipe) to `log_line`, until the process ends."""
        assert self.log_line is not None
        sink, descriptor = self.log_line, os.dup(logs.fileno())
        logs.close()

        def follow() -> None:
            with open(descriptor, encoding="utf-8", errors="replace") as stream:
                for line in stream:
                    sink(line)

        threading.Thread(target=follow, name=f"{self.function_name}-logs", daemon=True).start()

    def invoke(self, event: dict[str, Any]) -> Any:
        """Run one invocation; raises FunctionError (unhandled error) or FunctionTimeoutError (stopped at timeout)."""
        with self._lock:
            if self._retired:
                raise FunctionRetiredError(f"{self.function_name}: retired")
            if self._connection is None:
                self._start()  # a cold start, after a timeout or a crash
            assert self._connection is not None
            self.invocations += 1
            context = LambdaContext(self.function_name, self.spec.memory_mb, self.spec.timeout_s)
            started = time.monotonic()
            fields = {**asdict(context), "started": started}
            try:
                self._connection.send((event, fields))
                if not self._connection.poll(self.spec.timeout_s):
                    self.timeouts += 1
                    self._kill()
                    raise FunctionTimeoutError(
                        f"{self.function_name}: Task timed out after {self.spec.timeout_s:.2f} seconds"
                    )
                status, result = self._connection.recv()
            except (EOFError, OSError, BrokenPipeError) as error:  # the process died mid-invocation
                self._kill()
                raise FunctionError(f"{self.function_name}: the runtime exited ({error})") from None
        if status == "error":
            raise FunctionError(f"{self.function_name}: {result}")
        return result

    def crash(self) -> None:
        """Kill the execution environment now, mid-invocation if one runs, as a crash or out-of-memory would."""
        process = self._process
        if process is not None:
            process.kill()

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(10)
        if self._connection is not None:
            self._connection.close()
        self._process, self._connection = None, None

    def retire(self) -> None:
        """Take no more invocations: the one running finishes, later ones raise FunctionRetiredError."""
        with self._lock:
            self._retired = True
        self.stop()

    def stop(self) -> None:
        """End the execution environment (the next invocation would cold-start)."""
        with self._lock:
            if self._connection is not None:
                try:
                    self._connection.send(None)
                    if self._process is not None:
                        self._process.join(10)
                except (OSError, BrokenPipeError):
                    pass
            self._kill()


class FunctionAlias:
    """A Lambda alias, locally: callers invoke the alias, and a deploy moves it to a new function version.

    The new version is started (its init done) before the alias moves, the old one finishes what it runs and is then
    retired; an invocation that reached the old version too late goes to the new one. So a deploy loses no request.
    """

    def __init__(self, function: LocalFunction) -> None:
        self.current = function

    @property
    def function_name(self) -> str:
        return self.current.function_name

    @property
    def timeout_s(self) -> float:
        return self.current.timeout_s

    def invoke(self, event: dict[str, Any]) -> Any:
        while True:
            function = self.current
            try:
                return function.invoke(event)
            except FunctionRetiredError:
                if self.current is function:
                    raise

    def shift(self, function: LocalFunction) -> None:
        """Point the alias at `function` (already started) and retire the version it pointed at."""
        previous, self.current = self.current, function
        previous.retire()

    def stop(self) -> None:
        self.current.stop()
