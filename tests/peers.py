"""Real local peers for tests: an HTTP service whose health we control, free ports."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceState:
    def __init__(self) -> None:
        self.status = 200
        self.body = b"ok"
        self.hits = 0
        self.delay = 0.0  # seconds before answering: a slow service
        # Statuses to answer first, one per request, before falling back to `status`.
        self.script: list[int] = []


@contextmanager
def http_service() -> Iterator[tuple[str, ServiceState]]:
    """A real HTTP server on 127.0.0.1; set state.status to make it unhealthy."""
    state = ServiceState()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            state.hits += 1
            if state.delay:
                time.sleep(state.delay)
            self.send_response(state.script.pop(0) if state.script else state.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as base:
        yield f"{base}/health", state


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve the handler on a free port of 127.0.0.1 in a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}/health"
