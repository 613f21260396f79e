"""Bounded load on the local stack: 16 clients for 20 s of real mixed requests, and every answer is a 2xx.

Each client keeps one HTTP/1.1 connection to the front (loopback only) and cycles through v2 and v1 requests for
the text classifier, the digit classifier and the embeddings model (the last through the SageMaker stand-in),
with batches of one to four items. The figures (requests, throughput, p50 and p99 latency) are printed and recorded
as test properties for the closing note; only correctness is asserted, never timings, since they depend on the
machine. The stack's API function is one execution environment, so its invocations queue behind each other as a
single Lambda sandbox's would. The clients start together, so the first latencies also measure how the front
accepts a burst of 16 connections.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from local.config import LocalConfig
from local.stack import LocalStack

CLIENTS = 16
DURATION_S = 20.0
MAX_REQUESTS_PER_CLIENT = 5_000  # the loop is bounded in count as well as in time
REQUEST_TIMEOUT_S = 30.0
JOIN_GRACE_S = 60.0  # past the window: one last request each, however slow, then the test gives up on a client
TWEETS = [
    "I just don't trust my life in google's hands #driverless cars",
    "self-driving cars just seem lazy and a waste of money",
    "Can't wait to ride in my first autonomous car, the future is here!",
    "Not sure how I feel about robot cars on my street",
]


@dataclass(frozen=True)
class Request:
    """One request of the mix, and how to tell that its 2xx answer is the one asked for."""

    kind: str
    path: str
    body: bytes
    accepts: Callable[[Any], bool]


def digit_images(count: int) -> list[list[list[float]]]:
    from sklearn.datasets import load_digits

    return load_digits().images[:count].tolist()


def v2_request(name: str, tensor: str, datatype: str, data: list[Any], shape: list[int]) -> Request:
    flat = np.asarray(data, dtype=object if datatype == "BYTES" else np.float32).ravel().tolist()
    body = {"inputs": [{"name": tensor, "datatype": datatype, "shape": shape, "data": flat}]}

    def accepts(answer: Any) -> bool:
        return answer.get("model_name") == name and all(output["shape"][0] == shape[0] for output in answer["outputs"])

    return Request(f"v2 {name} x{shape[0]}", f"/v2/models/{name}/infer", json.dumps(body).encode(), accepts)


def v1_request(name: str, instances: list[Any]) -> Request:
    body = json.dumps({"instances": instances}).encode()
    return Request(
        f"v1 {name} x{len(instances)}",
        f"/v1/models/{name}:predict",
        body,
        lambda answer: len(answer["predictions"]) == len(instances),
    )


def request_mix() -> list[Request]:
    """Text and digits in both protocols and batch sizes; embeddings (a slower path) one time in five."""
    images = digit_images(4)
    mix = []
    for batch in (1, 2, 4):
        mix.append(v2_request("sentiment", "text", "BYTES", TWEETS[:batch], [batch]))
        mix.append(v1_request("sentiment", TWEETS[:batch]))
        mix.append(v2_request("digits", "pixels", "FP32", images[:batch], [batch, 8, 8]))
        mix.append(v1_request("digits", images[:batch]))
    mix.append(v2_request("embeddings", "text", "BYTES", TWEETS[:2], [2]))
    mix.append(v1_request("embeddings", TWEETS[:1]))
    mix.append(v2_request("embeddings", "text", "BYTES", TWEETS[:1], [1]))
    return mix


@dataclass
class ClientLog:
    """One client's record: latency of every 2xx, and a line for anything else."""

    latencies_s: list[float] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    non_2xx: list[str] = field(default_factory=list)
    wrong_answers: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)


def connect(api_url: str) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(urlsplit(api_url).netloc, timeout=REQUEST_TIMEOUT_S)


def send(connection: http.client.HTTPConnection, request: Request) -> tuple[int, bytes]:
    connection.request("POST", request.path, body=request.body, headers={"content-type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def run_client(api_url: str, mix: list[Request], offset: int, deadline: float, log: ClientLog) -> None:
    """Send requests back to back until the deadline (or the count bound), on one kept-alive connection."""
    connection = connect(api_url)
    try:
        for sent in range(MAX_REQUESTS_PER_CLIENT):
            if time.monotonic() >= deadline:
                break
            request = mix[(offset + sent) % len(mix)]
            started = time.perf_counter()
            try:
                status, payload = send(connection, request)
            except (OSError, http.client.HTTPException) as error:
                at = f"request {sent + 1} of client {offset}, {time.monotonic() - deadline + DURATION_S:.2f} s in"
                log.transport_errors.append(f"{request.kind} ({at}): {error!r}")
                connection.close()  # reconnects on the next request
                continue
            elapsed = time.perf_counter() - started
            if not 200 <= status < 300:
                log.non_2xx.append(f"{request.kind}: {status} {payload[:200]!r}")
                continue
            try:
                answered = request.accepts(json.loads(payload))
            except (ValueError, KeyError, TypeError, AttributeError):
                answered = False
            if not answered:
                log.wrong_answers.append(f"{request.kind}: {payload[:200]!r}")
            log.latencies_s.append(elapsed)
            log.kinds[request.kind] = log.kinds.get(request.kind, 0) + 1
    finally:
        connection.close()


@pytest.fixture(scope="module")
def stack(packages: dict[str, Path]) -> Iterator[LocalStack]:
    config = LocalConfig(api_port=0, aws_port=0, sagemaker_port=0, bucket="model-serving-load", poll_wait_s=1)
    with LocalStack(config, packages) as running:
        yield running


def test_sixteen_clients_for_twenty_seconds_get_only_2xx(
    stack: LocalStack, record_property: Callable[[str, object], None]
) -> None:
    # given the mix, each request answered once before the clock starts (every model warm, every request valid)
    assert stack.info is not None
    assert stack.api_function is not None
    mix = request_mix()
    for request in mix:
        connection = connect(stack.info.api_url)
        try:
            status, payload = send(connection, request)
        finally:
            connection.close()
        assert status == 200, (request.kind, payload[:300])
        assert request.accepts(json.loads(payload)), (request.kind, payload[:300])
    invocations_before = stack.api_function.invocations

    # when 16 clients send back to back for 20 s
    logs = [ClientLog() for _ in range(CLIENTS)]
    started = time.monotonic()
    deadline = started + DURATION_S
    threads = [
        threading.Thread(
            target=run_client, args=(stack.info.api_url, mix, index, deadline, logs[index]), name=f"load-{index}"
        )
        for index in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline + JOIN_GRACE_S - time.monotonic()))
    elapsed = time.monotonic() - started
    stuck = [thread.name for thread in threads if thread.is_alive()]

    # then: the figures for the closing note ...
    latencies_ms = np.asarray([latency for log in logs for latency in log.latencies_s]) * 1000
    non_2xx = [line for log in logs for line in log.non_2xx]
    wrong = [line for log in logs for line in log.wrong_answers]
    transport = [line for log in logs for line in log.transport_errors]
    requests_total = len(latencies_ms) + len(non_2xx) + len(transport)
    kinds: dict[str, int] = {}
    for log in logs:
        for kind, count in log.kinds.items():
            kinds[kind] = kinds.get(kind, 0) + count
    figures = {
        "clients": CLIENTS,
        "duration_s": round(elapsed, 1),
        "requests": requests_total,
        "throughput_rps": round(requests_total / elapsed, 1),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 1) if len(latencies_ms) else None,
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 1) if len(latencies_ms) else None,
        "max_ms": round(float(latencies_ms.max()), 1) if len(latencies_ms) else None,
        "non_2xx": len(non_2xx),
        "transport_errors": len(transport),
        "api_invocations": stack.api_function.invocations - invocations_before,
    }
    for name, value in figures.items():
        record_property(name, value)
    print(f"\nload: {json.dumps(figures)}\n  by kind: {json.dumps(dict(sorted(kinds.items())))}")

    # ... and every request answered, with a 2xx, with the answer asked for
    assert not stuck, f"clients still running {JOIN_GRACE_S:.0f} s past the window: {stuck}"
    assert not transport, transport[:10]
    assert not non_2xx, non_2xx[:10]
    assert not wrong, wrong[:10]
    assert len(latencies_ms) == requests_total > 0
    assert set(kinds) == {request.kind for request in mix}, "every kind of request was sent under load"
