"""Redaction of secret shapes from the text agents read and emit, before anything else is done with it.

Redaction comes first: masking a log line's numbers (`ghp_<n>abcd…`), grouping, cutting or summarising it
before it is redacted can leave a secret that no shape matches any more. So an agent redacts outside text as
it reads it (`redact_text`, `redact_lines`; with a limit, cut after), and its whole result once more
(`redact`, in activities/base.py's agent_result).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

MASK = "[REDACTED]"
_WORD = r"(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)"
# A secret-looking key (password, secret, token, api_key, …) of key=value / key: value.
_KEY = rf"[\w.-]*{_WORD}[\w.-]*"
_KEY_ENDS_IN_WORD = re.compile(rf"{_WORD}$", re.I)
_CLOSERS = {")": "(", "]": "[", "}": "{"}
_NOT_SECRETS = {"null", "none", "nil", "true", "false"}
_SCHEME = r"(?:Bearer|Basic|Token|Digest|Negotiate|NTLM|DPoP|Bot|OAuth)\s+"  # an Authorization header's scheme
_AUTHORIZATION = r"(?:proxy-)?authori[sz]ation"


class Shape(NamedTuple):
    """One kind of secret: what finds it and what it becomes."""

    name: str
    pattern: re.Pattern[str]
    replacement: str | Callable[[re.Match[str]], str]


def _mask_value(match: re.Match[str]) -> str:
    """A key=value match with its value masked, or as it was when the value is not a secret after all."""
    keep, quote = match["keep"], match["quote"]
    if quote is not None:
        inside = match["quoted"]
        return match[0] if inside in ("", MASK) else f"{keep}{quote}{MASK}{quote if match['closed'] else ''}"
    value, tail = match["bare"], ""
    for _ in range(2):  # `(password=x)`, `{"token": 123}}`: a bracket the value did not open closes the text around
        if value[-1:] in _CLOSERS and value.count(value[-1]) > value.count(_CLOSERS[value[-1]]):
            value, tail = value[:-1], value[-1] + tail
    if not value or value == MASK or value.lower() in _NOT_SECRETS:
        return match[0]
    # A number is a secret under `password`, `db_token` (or a key after a key); not under `token_count`, `max_tokens`.
    if not re.search(r"[A-Za-z]", value) and not match["nested"] and not _KEY_ENDS_IN_WORD.search(match["key"]):
        return match[0]
    return f"{keep}{MASK}{tail}"


SHAPES: tuple[Shape, ...] = (
    # Whole secrets first, so that a shape that masks what follows a word (`token …`, `password=…`) never takes the
    # head of one and leaves its tail unmatched (`token AIzaSy_…` would show from the `_` on); then keys' values,
    # then what follows Bearer/Basic/Token (which could take a key: `token db_password: "…"`); the Authorization
    # header's last, as it masks to the end of the header (`Authorization: password='…'` is key_value's).
    # PEM private keys (RSA, EC, OPENSSH, ENCRYPTED, PGP … BLOCK), whole block; one cut short, to the end.
    Shape(
        "private_key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?"
            r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
            re.S,
        ),
        f"-----{MASK} PRIVATE KEY-----",
    ),
    # JSON Web Tokens (an unsigned one too: its claims are what it carries).
    Shape("jwt", re.compile(r"(?<![A-Za-z0-9-])eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    # An AWS access key id with its secret access key beside it (credentials.csv, `aws configure list`).
    Shape(
        "aws_key_pair",
        re.compile(r"(?<![A-Za-z0-9])A(?:KI|SI)A[0-9A-Z]{16}[\s,:;|\"'=]{1,5}[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
        MASK,
    ),
    # Well-known token formats: ours, AWS access key ids, GitHub, Slack (bot, user, app, refresh, config), OpenAI-
    # style, Google API keys, Stripe. Any character but a letter or digit before one (`GITHUB_TOKEN_ghp_…`).
    Shape(
        "token",
        re.compile(
            r"(?<![A-Za-z0-9])(?:amt_[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
            r"|github_pat_[A-Za-z0-9_]{30,}|xox[abeprs]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9_-]{20,}"
            r"|AIza[0-9A-Za-z_-]{35}|[rs]k_live_[0-9A-Za-z]{16,})"
        ),
        MASK,
    ),
    # Passwords in URLs: scheme://user:password@host, and scheme://:password@host (Redis).
    Shape(
        "url_password",
        re.compile(r"(?P<keep>(?:\b|(?<=_))[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)"),
        rf"\g<keep>{MASK}",
    ),
    # key=value / key: value for secret-looking keys (password, secret, token, api_key, aws_secret_access_key, …);
    # a quoted value whole, spaces included; keys in a row (`secret: token=…`) are masked with the value. The key
    # starts a word, or follows a / or \ (the last part of a path) when "=" or a ":" without a space follows
    # (a/b.token=…, grep's /run/secrets/db_password:…); "<path>: <text>" names a file in a message ("open
    # /etc/passwd: permission denied").
    Shape(
        "key_value",
        re.compile(
            rf"(?P<keep>(?:(?<![\w./\\-])|(?<=[/\\])(?={_KEY}[\"']?(?:\s*=|:(?!\s))))(?P<key>{_KEY})[\"']?\s*[:=]\s*)"
            # `secret: password="two words"`, `token=(api_key=…)`, `token=Authorization: …`: the last key's value.
            rf"(?P<nested>(?:[^\s\w\"']{{0,3}}[\"']?(?:{_KEY}|{_AUTHORIZATION})[\"']?\s*[:=]\s*)*)"
            rf"(?:{_SCHEME})?"  # `api_token: Bearer abc123`, a credential too short to be taken alone
            r"(?:(?P<quote>[\"'])(?P<quoted>(?:\\.|(?!(?P=quote))[^\\\n])*)(?P<closed>(?P=quote)?)"
            r"|(?P<bare>[^\s\"',;&]{3,}))",
            re.I,
        ),
        _mask_value,
    ),
    # Bearer, Basic and Token credentials (curl -H, "token ghp_…"): RFC 6750's b64token, and any `=` in it. After
    # key_value, which has masked the value of a key that follows such a word (`token db_password: "…"`); up to an
    # Authorization header's name, never over it (`token x=Authorization: Bearer …`: the header's shape masks it).
    Shape(
        "auth_scheme",
        re.compile(
            rf"(?P<keep>\b(?:Bearer|Basic|Token)\s+)(?:(?!{_AUTHORIZATION}[\"']?\s*[:=])[\w.~+/=-]){{8,}}",
            re.I,
        ),
        rf"\g<keep>{MASK}",
    ),
    # Any other Authorization header value: a short bearer token, another scheme's, a bare one; to the end of the
    # header (the line, a quote, a comma), since a credential may hold spaces. A known scheme's name stays.
    Shape(
        "authorization",
        re.compile(
            rf"(?P<keep>\b{_AUTHORIZATION}[\"']?\s*[:=]\s*[\"']?(?>(?:{_SCHEME})?))(?!{_AUTHORIZATION}[\"']?\s*[:=])"
            r"[^\s\"',;](?:[^\"',;\n]*[^\s\"',;])?",  # a credential masked in part before is masked whole
            re.I,
        ),
        rf"\g<keep>{MASK}",
    ),
)

# Every shape above needs one of these in the text (in any case): text without any (most of it) skips them all in
# one scan. Lowercase: ASCII text, lowercased, is searched without re.I, which is several times faster.
_MAYBE = (
    r"-----begin|://|bearer|basic|token|authori[sz]ation|eyj|amt_|akia|asia|gh[pousr]_|github_pat_|xox[abeprs]-"
    r"|xapp-|sk-|aiza|k_live_|password|passwd|pwd|secret|api[_-]?key|access[_-]?key|private[_-]?key"
)
_MAYBE_SECRET, _MAYBE_SECRET_ASCII = re.compile(_MAYBE, re.I), re.compile(_MAYBE)

_SECRET_KEY = re.compile(r"password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|authorization", re.I)


def redact_text(text: str, limit: int | None = None) -> str:
    """The text with every secret shape masked; with a limit, its first `limit` characters.

    Only those are looked at (a long line costs no more than a short one), and a word the cut splits is left
    out whole: half a secret matches no shape. No shape's secret holds a space or a double quote, but a PEM block
    or a quoted value, which run to the end of a text that stops inside them.
    """
    if limit is not None and len(text) > limit:
        end = limit
        if not _separates(text[limit]):
            while end and not _separates(text[end - 1]):
                end -= 1
        text = text[:end]
    # Postgres text and jsonb cannot hold NUL: a log line or command output with one would fail the whole write.
    text = text.replace("\x00", "\ufffd")
    maybe = _MAYBE_SECRET_ASCII.search(text.lower()) if text.isascii() else _MAYBE_SECRET.search(text)
    if maybe is not None:
        for shape in SHAPES:
            text = shape.pattern.sub(shape.replacement, text)
    return text if limit is None else text[:limit]


def _separates(char: str) -> bool:
    return char.isspace() or char == '"'


_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
# A line inside a PEM block: base64, a header (encrypted keys, PGP armor), or blank; indented in YAML or a log.
_PEM_BODY = re.compile(r"\s*(?:[A-Za-z0-9+/=]+|(?:Proc-Type|DEK-Info|Version|Comment|Hash): .*)?\s*")
PEM_LINES_MAX = 200  # an 8192-bit RSA key is about 100 lines: a longer run of base64 is not one key


def redact_lines(lines: Iterable[str], limit: int | None = None) -> Iterator[str]:
    """Each line as redact_text makes it; a private key written over several lines (a log's lines, one at a time)
    is masked from its BEGIN line to its END line, or to the first line that cannot be part of it."""
    inside = 0  # lines of a PEM block seen so far; 0: not in one
    for line in lines:
        if inside:
            if end := _PEM_END.search(line):
                inside = 0
                yield MASK + redact_text(line[end.end() :], limit)
                continue
            if inside <= PEM_LINES_MAX and _PEM_BODY.fullmatch(line):
                inside += 1
                yield MASK
                continue
            inside = 0
        if "-----BEGIN" in line:
            begins = list(_PEM_BEGIN.finditer(line))
            inside = int(bool(begins) and not _PEM_END.search(line, begins[-1].end()))
        yield redact_text(line, limit)


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
