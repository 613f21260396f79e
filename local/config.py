"""The local stack's own settings: ports, bucket and timings from LOCAL_* variables, read once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from catalog import Platform

HOST = "127.0.0.1"  # never another interface: the stack has no authentication
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account, so ARNs match what moto returns

LOCAL_API_PORT = "LOCAL_API_PORT"
LOCAL_AWS_PORT = "LOCAL_AWS_PORT"
LOCAL_SAGEMAKER_PORT = "LOCAL_SAGEMAKER_PORT"
LOCAL_BUCKET = "LOCAL_BUCKET"
LOCAL_VISIBILITY_TIMEOUT = "LOCAL_VISIBILITY_TIMEOUT"
LOCAL_POLL_WAIT = "LOCAL_POLL_WAIT"
LOCAL_API_TIMEOUT = "LOCAL_API_TIMEOUT"
LOCAL_BATCH_TIMEOUT = "LOCAL_BATCH_TIMEOUT"
LOCAL_BATCH_CONCURRENCY = "LOCAL_BATCH_CONCURRENCY"  # batch execution environments polling at once (CPU count)
LOCAL_BATCH_THREADS = "LOCAL_BATCH_THREADS"  # onnxruntime threads per batch worker (CPU count / workers)
LOG_LEVEL = "LOG_LEVEL"
LOCAL_PACKAGES_DIR = "LOCAL_PACKAGES_DIR"  # serve packages from elsewhere than build/models (never trains there)


@dataclass(frozen=True)
class Credentials:
    """An identity's keys: a function's temporary role credentials, or the stack administrator's access key."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


BOOTSTRAP = Credentials("bootstrap", "bootstrap")  # accepted only while the stack is set up, before IAM is enforced


class LocalConfigError(ValueError):
    """A LOCAL_* variable that cannot be used; the message names it."""


@dataclass(frozen=True)
class LocalConfig:
    """Where the stack listens and how the batch queue behaves; port 0 means 'any free port' (tests)."""

    api_port: int = 3000
    aws_port: int = 5000
    sagemaker_port: int = 8080
    bucket: str = "model-serving-local"
    queue_name: str = "model-serving-batch"
    dead_letter_queue_name: str = "model-serving-batch-dlq"
    visibility_timeout_s: int | None = None  # None: the platform's (6x the batch function timeout), as in the cloud
    poll_wait_s: int = 2  # long-poll wait; shorter than Lambda's 20 s so that Ctrl-C is prompt
    log_level: str | None = None  # the functions' log level (LOG_LEVEL); None: Powertools' default
    api_timeout_s: float | None = None  # None: the platform's; tests shorten them to see Lambda stop an invocation
    batch_timeout_s: float | None = None
    batch_concurrency: int | None = None  # None: one batch worker per CPU this process may run on
    batch_threads: int | None = None  # None: the CPUs shared out among the workers

    @property
    def batch_workers(self) -> int:
        """How many batch execution environments poll the queue at once (the mapping's concurrency, locally)."""
        return self.batch_concurrency or len(os.sched_getaffinity(0))

    @property
    def batch_worker_threads(self) -> int:
        """Each worker's onnxruntime threads: concurrent sandboxes each get CPUs of their own, not all of the host's."""
        return self.batch_threads or max(1, len(os.sched_getaffinity(0)) // self.batch_workers)

    def queue_visibility_timeout_s(self, platform: Platform) -> int:
        """The platform's timeout unless a test or a curious user shortened it."""
        return platform.queue_visibility_timeout_s if self.visibility_timeout_s is None else self.visibility_timeout_s

    def batch_function_timeout_s(self, platform: Platform) -> float:
        return self.batch_timeout_s or platform.batch_function_timeout_s

    def check_event_source(self, platform: Platform) -> None:
        """Lambda refuses an SQS event source whose visibility timeout is shorter than the function's timeout."""
        visibility, timeout = self.queue_visibility_timeout_s(platform), self.batch_function_timeout_s(platform)
        if visibility < timeout:
            raise LocalConfigError(
                f"Queue visibility timeout: {visibility} seconds is less than Function timeout: {timeout:g} seconds "
                f"(set {LOCAL_BATCH_TIMEOUT} too, or a longer {LOCAL_VISIBILITY_TIMEOUT})"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LocalConfig:
        env = os.environ if environ is None else environ
        return cls(
            api_port=_port(env, LOCAL_API_PORT, cls.api_port),
            aws_port=_port(env, LOCAL_AWS_PORT, cls.aws_port),
            sagemaker_port=_port(env, LOCAL_SAGEMAKER_PORT, cls.sagemaker_port),
            bucket=env.get(LOCAL_BUCKET) or cls.bucket,
            visibility_timeout_s=_int(env, LOCAL_VISIBILITY_TIMEOUT, None),
            poll_wait_s=min(20, _int(env, LOCAL_POLL_WAIT, cls.poll_wait_s) or 0),  # SQS allows 0..20 s
            log_level=env.get(LOG_LEVEL) or None,
            api_timeout_s=_int(env, LOCAL_API_TIMEOUT, None),
            batch_timeout_s=_int(env, LOCAL_BATCH_TIMEOUT, None),
            batch_concurrency=_int(env, LOCAL_BATCH_CONCURRENCY, None),
            batch_threads=_int(env, LOCAL_BATCH_THREADS, None),
        )


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    port = _int(env, name, default)
    assert port is not None
    if port > 65535:
        raise LocalConfigError(f"{name} must be a port number (0 for any free port), got {port}")
    return port


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise LocalConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise LocalConfigError(f"{name} must not be negative, got {value}")
    return value
