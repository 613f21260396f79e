"""A threaded HTTP server on 127.0.0.1, run in the background: what the API front and the SageMaker stand-in share."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from local.config import HOST


class _Server(ThreadingHTTPServer):
    # http.server's listen backlog of 5 resets or delays clients that connect together; API Gateway queues them all
    request_queue_size = socket.SOMAXCONN
    daemon_threads = True


class LoopbackServer:
    """Binds at construction (port 0 picks a free one), serves from a daemon thread between start() and stop()."""

    def __init__(self, handler_class: type[BaseHTTPRequestHandler], port: int, name: str) -> None:
        self.server = _Server((HOST, port), handler_class)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
