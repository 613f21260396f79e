"""The local servers accept a burst of connections at once, as API Gateway and SageMaker runtime do."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler

from local.loopback import LoopbackServer

CLIENTS = 48
SYN_RETRY_S = 1.0  # a connection the listen queue dropped is retried by the kernel after about a second


class Live(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_burst_of_clients_is_queued_not_dropped() -> None:
    # given many clients that connect at the same instant
    server = LoopbackServer(Live, 0, name="burst")
    server.start()
    barrier, took, failures = threading.Barrier(CLIENTS), [], []

    def client() -> None:
        barrier.wait()
        started = time.monotonic()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            connection.request("GET", "/")
            assert connection.getresponse().status == 200
            connection.close()
        except OSError as error:
            failures.append(error)
        took.append(time.monotonic() - started)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        server.stop()
    # then none was reset, and none waited for the kernel's SYN retry (http.server's backlog of 5 made 20+ wait)
    assert failures == []
    assert len(took) == CLIENTS
    assert max(took) < SYN_RETRY_S, sorted(took)[-5:]
