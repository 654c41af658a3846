"""Context window management: the newest messages verbatim, everything older folded into one summary."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Protocol

from core.redact import redact_text
from core.tokens import count_tokens, truncate_tokens

# Each message costs its content plus the role and delimiters around it, as in OpenAI's chat format
# (<|im_start|>role … <|im_end|>, about 4 tokens a message).
MESSAGE_OVERHEAD = 4
# Room for a summary message and the newest message, each with its overhead and a few tokens of text.
MIN_BUDGET = 4 * MESSAGE_OVERHEAD
# One huge log line must not starve the rest; a line's key text comes first, so cutting its tail is cheap.
MAX_LINE_TOKENS = 60
_MAX_LINE_CHARS = 1_000  # bounds the regex and tokenizer work per line before the token cut


@dataclass(frozen=True)
class Message:
    id: int
    role: str  # system | user | assistant | tool
    content: str
    agent: str | None = None
    step_id: str | None = None
    created_at: str = ""  # ISO 8601
    kind: str = "message"  # message | summary


class Summarizer(Protocol):
    name: str

    def summarize(self, messages: Sequence[Message], max_tokens: int) -> str: ...


@dataclass(frozen=True)
class Compressed:
    messages: list[Message]  # oldest first: [summary] + the newest messages verbatim
    summary: str | None  # None when nothing had to be compressed
    covered_ids: list[int]  # the messages the summary replaces, oldest first
    summarizer: str | None  # who wrote the summary; None when there is none or an input summary was reused
    tokens: int  # sum of message_tokens over `messages`
    fallback_reason: str | None  # the preferred summariser's error when the extractive one stood in


def message_tokens(message: Message) -> int:
    """Tokens `message` costs in a prompt: its content plus MESSAGE_OVERHEAD."""
    return count_tokens(message.content) + MESSAGE_OVERHEAD


_ERROR_RE = re.compile(
    r"(?:error|exception)\w*|\b(?:traceback|fatal|critical|refused|timed? ?out|timeouts|denied|forbidden"
    r"|unauthori[sz]ed|panic\w*|oom\w*|out of memory|crash\w*|unavailable|unreachable|killed|5xx)\b"
    r"|\bfail(?:s|ed|ures?|ing)?\b(?!\s*over)"  # failing over is a decision, not an error
    # A 5xx status code, not a latency, size or count that happens to start with 5.
    r"|(?<![\w.])5\d\d(?![\w.%])(?!\s*(?:ms|s|sec\w*|min\w*|[kmg]i?b|rps|req\w*|users|pods|items|orders)\b)",
    re.I,
)
_DECISION_RE = re.compile(
    r"\b(?:approv\w*|reject\w*|expired|decid\w*|decision\w*|restart\w*|roll(?:ed|ing)? ?back|rollback"
    r"|scaled|scaling|scale (?:up|down|out|in|to)|will|chose|chosen|choos\w*|escalat\w*|fail(?:ed|ing)? ?over"
    r"|revert\w*|mitigat\w*|resolved|paused|resumed|cancel\w*|deployed)\b",
    re.I,
)
_NUMBER_RE = re.compile(r"\d{1,2}:\d{2}|\d{4}-\d{2}-\d{2}|(?<![\w-])\d+(?:[.,]\d+)*(?:%|[a-z]{1,3})?(?![\w-])", re.I)
# A log line's own timestamp, ISO 8601 or the HH:MM an earlier summary shortened it to.
_LEADING_TS = re.compile(
    r"^\[?(?:\d{4}-\d{2}-\d{2}[T ])?(\d{2}:\d{2})(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d\d:?\d\d)?\]?\s+"
)
_HEADER = "Summary of "
_HEADER_RE = re.compile(r"Summary of (\d+) earlier messages(?: from (\S+) to \S+?)?: \d+ lines kept, (\d+) dropped")
_SOURCED = re.compile(r"(\[[^\]]*\]) (.*)")
_COUNTED = re.compile(r"(.*?)(?: ×(\d+))?")
_PRIORITY = (_ERROR_RE, _DECISION_RE, _NUMBER_RE)  # then, as rank 3, the first line an agent wrote


@dataclass
class _Line:
    order: int  # position of the first occurrence: output stays chronological
    rank: int
    repeat: bool  # another line of the same shape (numbers aside) came first
    source: str
    text: str
    count: int

    @property
    def shown(self) -> str:
        return f"{self.text} ×{self.count}" if self.count > 1 else self.text

    @cached_property
    def cost(self) -> int:  # with its source and newline: an upper bound on what it adds to the summary
        return count_tokens(f"{self.source} {self.shown}") + 1


def _source(message: Message) -> str:
    who = message.agent or message.role
    return f"[{message.step_id}/{who}]" if message.step_id else f"[{who}]"


def _parts(message: Message, raw: str, line: str, previous: str | None) -> tuple[str, str, int]:
    """(source, text, occurrences) of a line; an earlier summary's lines carry all three."""
    if message.kind != "summary":
        return _source(message), line, 1
    source = previous or _source(message)
    if not raw[:1].isspace() and (sourced := _SOURCED.fullmatch(line)):  # indented: same source as above
        source, line = sourced[1], sourced[2]
    counted = _COUNTED.fullmatch(line)
    assert counted is not None  # every string matches
    return source, counted[1], int(counted[2] or 1)


def _collect(messages: Sequence[Message]) -> tuple[list[_Line], int]:
    """The lines worth keeping, duplicates merged, and how many non-empty lines there were in all."""
    lines: dict[str, _Line] = {}
    shapes: set[str] = set()
    agents_seen: set[str] = set()
    total = 0
    for message in messages:
        author = message.agent or message.role
        # People are quoted for what they say (decisions, numbers), agents also for what they set out to do.
        first = message.role in ("assistant", "tool") and message.kind != "summary" and author not in agents_seen
        agents_seen.add(author)
        source = None
        for raw in message.content.splitlines():
            line = " ".join(raw[:_MAX_LINE_CHARS].split())
            if not line or (message.kind == "summary" and line.startswith(_HEADER)):
                continue  # an earlier summary's header is folded into ours
            source, text, count = _parts(message, raw, line, source)
            total += count
            is_first, first = first, False
            # The same log line at another time is still a duplicate: key it without its timestamp.
            key = _LEADING_TS.sub("", text)
            if key in lines:
                lines[key].count += count
                continue
            rank = next((r for r, p in enumerate(_PRIORITY) if p.search(text)), len(_PRIORITY) if is_first else None)
            if rank is None:
                continue
            # The header gives the dates; the time of day is what tells log lines apart.
            text = truncate_tokens(_LEADING_TS.sub(r"\g<1> ", text), MAX_LINE_TOKENS)
            shape = re.sub(r"\d+", "#", key)
            lines[key] = _Line(len(lines), rank, shape in shapes, source, text, count)
            shapes.add(shape)
    return list(lines.values()), total


def _header(messages: Sequence[Message], kept: int, dropped: int) -> str:
    covered, since, until = 0, "", ""
    for m in messages:  # an earlier summary's header counts what it covered and dropped in turn
        earlier = _HEADER_RE.match(m.content) if m.kind == "summary" else None
        covered += int(earlier[1]) if earlier else 1
        dropped += int(earlier[3]) if earlier else 0
        since = since or (earlier[2] if earlier and earlier[2] else m.created_at)
        until = m.created_at or until
    span = f" from {since} to {until}" if since and until else ""
    return f"{_HEADER}{covered} earlier messages{span}: {kept} lines kept, {dropped} dropped."


def _body(chosen: list[_Line]) -> str:
    out, previous = [], None
    for line in sorted(chosen, key=lambda c: c.order):
        # A run of lines from one source names it once: ~7 tokens a line, a fifth of a typical log line.
        out.append(f"  {line.shown}" if line.source == previous else f"{line.source} {line.shown}")
        previous = line.source
    return "\n".join(out)


class ExtractiveSummarizer:
    """Keeps error lines, decisions and numbers, in that order of priority, without an LLM. Deterministic."""

    name = "extractive"

    def summarize(self, messages: Sequence[Message], max_tokens: int) -> str:
        candidates, total = _collect(messages)
        # The counts in the header only shrink from this bound, and fewer digits never cost more tokens.
        header_room = count_tokens(_header(messages, total, total)) + 1
        # The first line of every shape goes in before a second of any (a metric sampled each minute is one
        # shape with fresh numbers), so a flood of samples cannot crowd out a distinct error or decision.
        pending = sorted(candidates, key=lambda c: (c.repeat, c.rank, c.order))
        chosen: list[_Line] = []
        # A line's cost counts its source as if it began a run; the room that grouping saves is filled on the
        # next pass. (A late line that splits a run can cost more: the check below takes it out again.)
        while pending:
            room = max_tokens - header_room - count_tokens(_body(chosen))
            rest = []
            for line in pending:
                if line.cost <= room:
                    chosen.append(line)
                    room -= line.cost
                else:
                    rest.append(line)
            if len(rest) == len(pending):
                break
            pending = rest
        while True:
            kept = sum(line.count for line in chosen)
            text = "\n".join(filter(None, [_header(messages, kept, total - kept), _body(chosen)]))
            # Tokens can merge across a newline, so the sum of parts is an estimate: check the whole.
            if count_tokens(text) <= max_tokens or not chosen:
                return truncate_tokens(text, max_tokens)
            chosen.pop()  # the lowest priority, latest line


def _summarize(preferred: Summarizer, older: list[Message], max_tokens: int) -> tuple[str, str, str | None]:
    """(summary, summariser name, fallback reason) — the extractive summariser when `preferred` fails."""
    name = getattr(preferred, "name", type(preferred).__name__)
    try:
        text = preferred.summarize(older, max_tokens)
        if not isinstance(text, str):
            raise TypeError(f"summary is {type(text).__name__}, not str")
        size = count_tokens(text)
        if size > max_tokens:
            raise ValueError(f"summary has {size} tokens, over its budget of {max_tokens}")
        return text, name, None
    except Exception as exc:  # an LLM summariser can fail in any way; the agent still needs its context
        if isinstance(preferred, ExtractiveSummarizer):
            raise
        reason = redact_text(f"{name}: {type(exc).__name__}: {exc}", 500)  # an HTTP error can carry a whole page
    fallback = ExtractiveSummarizer()
    return truncate_tokens(fallback.summarize(older, max_tokens), max_tokens), fallback.name, reason


def compress(messages: Sequence[Message], budget: int, *, summarizer: Summarizer | None = None) -> Compressed:
    """`messages` (oldest first) made to fit `budget` tokens: the newest verbatim, the rest as one summary."""
    if budget < MIN_BUDGET:
        raise ValueError(f"budget must be at least {MIN_BUDGET} tokens, got {budget}")
    history = list(messages)
    sizes = [message_tokens(m) for m in history]
    if sum(sizes) <= budget:
        return Compressed(history, None, [], None, sum(sizes), None)

    # Roughly half for the newest messages verbatim: enough for the current exchange, the rest for history.
    keep_room = budget // 2
    start, kept_tokens = len(history), 0
    while start > 0 and kept_tokens + sizes[start - 1] <= keep_room:
        start -= 1
        kept_tokens += sizes[start]
    kept = history[start:]
    if not kept:  # the newest message alone is too big: cut it, it still goes in
        start = len(history) - 1
        room = (budget if start == 0 else keep_room) - MESSAGE_OVERHEAD
        newest = history[-1]
        kept = [replace(newest, content=truncate_tokens(newest.content, room))]
        kept_tokens = message_tokens(kept[0])
    older = history[:start]
    if not older:
        return Compressed(kept, None, [], None, kept_tokens, None)

    room = budget - kept_tokens - MESSAGE_OVERHEAD
    covered = [m.id for m in older]
    if len(older) == 1 and older[0].kind == "summary" and sizes[0] - MESSAGE_OVERHEAD <= room:
        # Re-summarising a summary that still fits would only lose detail; keep it and its id.
        result = [older[0], *kept]
        return Compressed(result, older[0].content, covered, None, sizes[0] + kept_tokens, None)

    text, name, reason = _summarize(summarizer or ExtractiveSummarizer(), older, room)
    summary = Message(id=0, role="system", content=text, created_at=older[-1].created_at, kind="summary")
    result = [summary, *kept]
    return Compressed(result, text, covered, name, sum(message_tokens(m) for m in result), reason)
