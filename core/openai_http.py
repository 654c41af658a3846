"""What our OpenAI-compatible HTTP clients (embeddings, chat completions) share: the API root and one-line,
bounded error excerpts."""

from __future__ import annotations

import httpx

EXCERPT = 200  # characters of a server's error shown in our error message


def api_root(base_url: str) -> str:
    """The API root: base_url with `/v1` appended unless it already ends with it."""
    base = base_url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


def one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT else text[:EXCERPT] + "…"


def error_excerpt(response: httpx.Response) -> str:
    """The error's message (OpenAI `{"error": {"message"}}`, Ollama `{"error": "…"}`) or the body, bounded."""
    try:
        error = response.json()["error"]
        text = error["message"] if isinstance(error, dict) else error
    except (ValueError, KeyError, TypeError):
        text = response.text
    return one_line(str(text))
