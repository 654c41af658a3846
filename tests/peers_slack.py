"""A local stand-in for Slack's Web API (chat.postMessage) and for `response_url`, speaking Slack's JSON, so our
side runs the real slack-sdk clients against it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.peers import serving


@dataclass
class SlackCalls:
    posted: list[dict[str, Any]] = field(default_factory=list)  # chat.postMessage bodies (+ "_auth")
    responses: list[dict[str, Any]] = field(default_factory=list)  # what we sent to response_url
    updated: list[dict[str, Any]] = field(default_factory=list)  # chat.update bodies
    fail_posts: int = 0  # answer this many chat.postMessage calls with HTTP 500 first


@contextmanager
def slack_api() -> Iterator[tuple[str, SlackCalls]]:
    """Yields (base URL, calls): the Web API at <base>/api/, response URLs at <base>/actions/<anything>."""
    calls = SlackCalls()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, code: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/api/chat.postMessage":
                if calls.fail_posts > 0:
                    calls.fail_posts -= 1
                    self._answer(500, b'{"ok": false, "error": "internal_error"}')
                    return
                body = json.loads(raw)
                calls.posted.append({**body, "_auth": self.headers.get("Authorization")})
                ts = f"1732550000.{len(calls.posted):06d}"
                answer = {"ok": True, "channel": "C0APPROVALS", "ts": ts, "message": {"text": body.get("text")}}
                self._answer(200, json.dumps(answer).encode())
            elif self.path == "/api/chat.update":
                body = json.loads(raw)
                calls.updated.append(body)
                answer = {"ok": True, "channel": body.get("channel"), "ts": body.get("ts"), "text": body.get("text")}
                self._answer(200, json.dumps(answer).encode())
            elif self.path.startswith("/actions/"):
                calls.responses.append(json.loads(raw))
                self._answer(200, b"ok", "text/plain")
            else:
                self._answer(404, b'{"ok": false, "error": "unknown_method"}')

    with serving(Handler) as base:
        yield base, calls
