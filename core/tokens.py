"""Token counting for context budgets: o200k_base (the GPT-4o family's encoding), offline via bpe_openai."""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Iterator
from typing import Any

TOKENIZER = "o200k_base"
ELLIPSIS = "…"

# bpe_openai refuses a single call of ≥1,000,000 characters or >200,000 tokens. A character is at most 4
# UTF-8 bytes and a token at least one byte, so 50,000-character chunks stay under both limits.
_CHUNK_CHARS = 50_000

_lock = threading.Lock()
_encoding: Any = None


def _enc() -> Any:
    global _encoding
    if _encoding is None:
        with _lock:
            # Loading parses ~200k merge ranks; several worker threads may ask at once on a cold process.
            if _encoding is None:
                with warnings.catch_warnings():
                    # bpe_openai 0.1.4 reads its ranks with importlib.resources.open_binary, deprecated in 3.11.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    # Imported here: importing it parses three encodings (~0.4 s), which modules that only
                    # import core (workflows, the API) should not pay for.
                    import bpe_openai

                    _encoding = bpe_openai.get_encoding(TOKENIZER)
    return _encoding


def _chunks(text: str) -> Iterator[str]:
    start = 0
    while len(text) - start > _CHUNK_CHARS:
        end = start + _CHUNK_CHARS
        # Cutting just after a newline (else a space) lands on a pre-tokeniser boundary, so the sum over
        # chunks equals the count of the whole text in all but contrived cases.
        cut = text.rfind("\n", start + 1, end)
        if cut < 0:
            cut = text.rfind(" ", start + 1, end)
        end = cut + 1 if cut >= 0 else end
        yield text[start:end]
        start = end
    if start < len(text):
        yield text[start:]


def _encode(text: str) -> Iterator[list[int]]:
    enc = _enc()
    for chunk in _chunks(text):
        # encode_ordinary: "<|endoftext|>" typed by a user is text, not a control token (encode() raises).
        yield enc.encode_ordinary(chunk)


def count_tokens(text: str) -> int:
    """Number of o200k_base tokens in `text`; special-token look-alikes count as plain text."""
    if len(text) <= _CACHED_CHARS:  # each attempt counts the conversation so far again: mostly the same texts
        return _count_cached(text)
    return _count(text)


def _count(text: str) -> int:
    return sum(len(tokens) for tokens in _encode(text))


# At most _CACHED_TEXTS texts of at most _CACHED_CHARS characters (≤ 8 MB of text held).
_CACHED_CHARS = 2_000
_CACHED_TEXTS = 4_096
_count_cached = functools.lru_cache(maxsize=_CACHED_TEXTS)(_count)


def _decode_prefix(tokens: list[int]) -> str:
    data: bytes = _enc().decode_bytes(tokens)
    # The cut may split a multi-byte character; drop the partial tail instead of emitting U+FFFD.
    for drop in range(4):
        try:
            return data[: len(data) - drop].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="ignore")


def truncate_tokens(text: str, max_tokens: int) -> str:
    """`text` cut at a token boundary so it has at most `max_tokens` tokens, "…" appended when cut."""
    if max_tokens <= 0:
        return ""
    head: list[int] = []
    for tokens in _encode(text):
        head.extend(tokens)
        if len(head) > max_tokens:
            break
    else:
        return text
    keep = max_tokens - count_tokens(ELLIPSIS)
    while keep > 0:
        # Re-encoding a decoded prefix can merge differently from the original tokens: check, don't assume.
        cut = _decode_prefix(head[:keep]).rstrip() + ELLIPSIS
        if count_tokens(cut) <= max_tokens:
            return cut
        keep -= 1
    return ELLIPSIS if count_tokens(ELLIPSIS) <= max_tokens else ""
