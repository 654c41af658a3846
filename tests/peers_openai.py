"""A real local OpenAI-compatible server for tests: /v1/embeddings and /v1/chat/completions."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.peers import serving


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class OpenAICalls:
    """What the server received, and how it answers next (both endpoints)."""

    requests: list[Call] = field(default_factory=list)
    reply: str = "summary from the model"  # chat: choices[0].message.content
    status: int = 200
    delay: float = 0.0  # seconds to sleep before answering
    dimensions: int = 384  # length of each embedding
    raw: bytes | None = None  # sent verbatim (with `status`) instead of a JSON answer: malformed replies
    api_key: str = ""  # when set, requests without `Authorization: Bearer <api_key>` get 401

    @property
    def last(self) -> Call:
        return self.requests[-1]


def fake_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic, deliberately unnormalised vector for a text."""
    digest = hashlib.sha256(text.encode()).digest()
    return [float(digest[i % len(digest)] + 1) for i in range(dimensions)]


@contextmanager
def openai_api() -> Iterator[tuple[str, OpenAICalls]]:
    """Serve the OpenAI wire format on 127.0.0.1; yields (base URL without /v1, calls)."""
    calls = OpenAICalls()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            calls.requests.append(Call(self.path, dict(self.headers.items()), json.loads(raw or b"null")))
            if calls.delay:
                time.sleep(calls.delay)
            if calls.api_key and self.headers.get("Authorization") != f"Bearer {calls.api_key}":
                return self._send(401, {"error": {"message": "Incorrect API key provided"}})
            if calls.raw is not None:
                return self._send_bytes(calls.status, calls.raw)
            if calls.status != 200:
                return self._send(calls.status, {"error": {"message": "the model crashed\nwith a traceback"}})
            body = calls.last.body
            if self.path == "/v1/embeddings":
                data = [
                    {"object": "embedding", "index": i, "embedding": fake_vector(text, calls.dimensions)}
                    for i, text in enumerate(body["input"])
                ]
                # Out of order on purpose: clients must sort by index.
                return self._send(200, {"object": "list", "model": body["model"], "data": data[::-1]})
            if self.path == "/v1/chat/completions":
                message = {"role": "assistant", "content": calls.reply}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                return self._send(200, {"id": "chatcmpl-1", "model": body["model"], "choices": [choice]})
            return self._send(404, {"error": {"message": f"no route {self.path}"}})

        def _send(self, status: int, payload: object) -> None:
            self._send_bytes(status, json.dumps(payload).encode())

        def _send_bytes(self, status: int, payload: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and hung up: expected in the timeout tests

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as base:
        yield base, calls
