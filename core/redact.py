"""Redaction of common secret shapes from agent output and conversation text before it is stored."""

from __future__ import annotations

import re
from typing import Any

MASK = "[REDACTED]"
# A secret-looking key (password, secret, token, api_key, …) of key=value / key: value.
_KEY = r"[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)[\w.-]*"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # PEM private keys, whole block.
    (
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
            re.S,
        ),
        f"-----{MASK} PRIVATE KEY-----",
    ),
    # Passwords in URLs: scheme://user:password@host
    (re.compile(r"(?P<keep>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]+:)[^\s@/]+(?=@)"), rf"\g<keep>{MASK}"),
    # Authorization headers and bearer tokens.
    (re.compile(r"(?P<keep>\b(?:Bearer|Basic|Token)\s+)[A-Za-z0-9._~+/=-]{8,}", re.I), rf"\g<keep>{MASK}"),
    # JSON Web Tokens.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"), MASK),
    # Well-known token formats: ours, AWS, GitHub, Slack, OpenAI-style, Google API keys, Stripe.
    (
        re.compile(
            r"\b(?:amt_[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
            r"|github_pat_[A-Za-z0-9_]{30,}|xox[abeprs]-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9_-]{20,}"
            r"|AIza[0-9A-Za-z_-]{35}|[rs]k_live_[0-9A-Za-z]{16,})"
        ),
        MASK,
    ),
    # key=value / key: value for secret-looking keys (password, secret, token, api_key, …). The key starts a word, or
    # follows a / or \ (the last part of a path) when "=" or a ":" without a space follows (a/b.token=…, grep's
    # /run/secrets/db_password:…); "<path>: <text>" names a file in a message ("open /etc/passwd: permission denied").
    (
        re.compile(
            rf"(?P<keep>(?:(?<![\w./\\-])|(?<=[/\\])(?={_KEY}[\"']?(?:\s*=|:(?!\s)))){_KEY}[\"']?\s*[:=]\s*[\"']?)"
            r"(?!\[REDACTED\])(?=[^\s\"',;&]*[A-Za-z])[^\s\"',;&]{3,}",
            re.I,
        ),
        rf"\g<keep>{MASK}",
    ),
]

# Every pattern above needs one of these in the text: text without any (most of it) skips them all in one scan.
_MAYBE_SECRET = re.compile(
    r"-----BEGIN|://|bearer|basic|token|eyJ|amt_|AKIA|ASIA|gh[pousr]_|github_pat_|xox[abeprs]-|sk-|AIza|k_live_"
    r"|password|passwd|pwd|secret|api[_-]?key|access[_-]?key|private[_-]?key",
    re.I,
)

_SECRET_KEY = re.compile(r"password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|authorization", re.I)


def redact_text(text: str) -> str:
    # Postgres text and jsonb cannot hold NUL: a log line or command output with one would fail the whole write.
    text = text.replace("\x00", "\ufffd")
    if _MAYBE_SECRET.search(text) is None:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any) -> Any:
    """Redact strings anywhere in a JSON-like value; values under secret-looking keys are masked whole."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            key: (MASK if isinstance(key, str) and _SECRET_KEY.search(key) and isinstance(item, str) else redact(item))
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value
