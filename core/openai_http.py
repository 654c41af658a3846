"""What our OpenAI-compatible HTTP clients (embeddings, chat completions) share: the API root and one-line,
bounded error excerpts."""

from __future__ import annotations

import httpx

from core.redact import redact_text

EXCERPT = 200  # characters of a server's error shown in our error message


def api_root(base_url: str) -> str:
    """The API root: base_url with `/v1` appended unless it already ends with it."""
    base = base_url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


def one_line(text: str) -> str:
    """The text on one line, secrets masked, at most EXCERPT characters: redacted as it is cut (a cut never leaves
    part of a secret that its whole would have been masked as)."""
    text = " ".join(text.split())
    excerpt = redact_text(text, EXCERPT)  # redacted whole, then cut: a mask longer than its secret stays in bounds
    return excerpt if len(text) <= EXCERPT else excerpt + "…"


def error_excerpt(response: httpx.Response) -> str:
    """The error's message (OpenAI `{"error": {"message"}}`, Ollama `{"error": "…"}`) or the body, bounded."""
    try:
        error = response.json()["error"]
        text = error["message"] if isinstance(error, dict) else error
    except (ValueError, KeyError, TypeError):
        text = response.text
    return one_line(str(text))
