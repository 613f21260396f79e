"""A SageMaker (Triton) endpoint as an inference backend: Open Inference Protocol v2 JSON through InvokeEndpoint.

Two limits shape it. Triton refuses a batch over its config's max_batch_size, so a larger batch goes as sub-batches
of at most that size (planned by `functions.runtime.bucketing`: as few as fit, cut by token length), concurrently
(one round, so a request costs one call's time). And the function
has a timeout of its own: the client's connect and read timeouts times its attempts end well before it, so a slow
endpoint is a 504 with a JSON body rather than the platform's bare 503 for a function that ran out of time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

from functions.runtime.errors import BackendError, BackendTimeoutError
from functions.runtime.tensors import decode_output, encode_request

ENDPOINT_ATTEMPTS = 2  # one retry: a dropped connection or a throttled call gets a second chance
ENDPOINT_SHARE = 0.8  # of the function's timeout; the rest tokenises, encodes the answer and returns it
RETRY_BACKOFF_S = 1.0  # botocore's standard mode waits at most 1 s before its first retry
CONNECT_TIMEOUT_S = 2.0
MIN_ATTEMPT_S = 0.5  # a function of a second or two cannot fit two endpoint calls; it still gets one short try
MAX_CHUNK_WORKERS = 16
# A call is a network round trip, dearer than any padding it could save: as few calls as max_batch_size allows.
REMOTE_CALL_COST_TOKENS = 1e9


def endpoint_client_config(function_timeout_s: float, max_connections: int = 10) -> Config:
    """The sagemaker-runtime client's config: (connect + read) x attempts + backoff stays within ENDPOINT_SHARE of
    the function's timeout (25 s: 2 s connect + 7.5 s read, twice, plus at most 1 s of backoff: 20 s)."""
    per_attempt = max(MIN_ATTEMPT_S, (function_timeout_s * ENDPOINT_SHARE - RETRY_BACKOFF_S) / ENDPOINT_ATTEMPTS)
    connect = min(CONNECT_TIMEOUT_S, per_attempt / 4)
    return Config(
        connect_timeout=connect,
        read_timeout=per_attempt - connect,
        retries={"total_max_attempts": ENDPOINT_ATTEMPTS, "mode": "standard"},
        max_pool_connections=max_connections,
    )


def chunk_workers(largest_batch: int, max_batch: int | None) -> int:
    """Threads enough to send the largest batch a function scores as one round of concurrent chunks."""
    if max_batch is None:
        return 1
    return max(1, min(MAX_CHUNK_WORKERS, math.ceil(largest_batch / max_batch)))


class SageMakerBackend:
    """A Triton endpoint on SageMaker, spoken to in v2 JSON through InvokeEndpoint, at most `max_batch` per call."""

    name = "sagemaker"
    remote = True
    call_cost_tokens: float = REMOTE_CALL_COST_TOKENS

    def __init__(
        self,
        client: Any,
        endpoint_name: str,
        output_names: list[str],
        *,
        max_batch: int | None = None,
        workers: int = 1,
    ) -> None:
        self.client = client
        self.endpoint_name = endpoint_name
        self.output_names = output_names
        self.max_rows = max_batch
        self._chunks = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{endpoint_name}-chunk")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._invoke(feeds)

    def run_many(self, batches: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        if len(batches) == 1:
            return [self._invoke(batches[0])]
        return list(self._chunks.map(self._invoke, batches))

    def _invoke(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One InvokeEndpoint call; every failure is a BackendError (a timeout its own kind, for a 504)."""
        try:
            response = self.client.invoke_endpoint(
                EndpointName=self.endpoint_name,
                ContentType="application/json",
                Accept="application/json",
                Body=encode_request(feeds, self.output_names),
            )
            document = json.loads(response["Body"].read())
        except (ReadTimeoutError, ConnectTimeoutError) as error:
            raise BackendTimeoutError(f"endpoint {self.endpoint_name} did not answer in time: {error}") from error
        except (ClientError, BotoCoreError) as error:
            raise BackendError(f"endpoint {self.endpoint_name} failed: {error}") from error
        except ValueError as error:  # not JSON, or not even UTF-8
            raise BackendError(f"endpoint {self.endpoint_name} returned non-JSON: {error}") from error
        try:
            tensors = {tensor["name"]: decode_output(tensor) for tensor in document["outputs"]}
            return {name: tensors[name] for name in self.output_names}
        except (KeyError, TypeError, ValueError) as error:
            raise BackendError(f"endpoint {self.endpoint_name} returned no v2 output {error}") from error
