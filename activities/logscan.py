"""Log lines into error groups: timestamps, multi-line entries, the error patterns, normalisation. No I/O.

Used by investigate_logs (activities/logs.py) on file tails and Loki lines alike. Every line is redacted as it is
read (`records`, `loki_record`), before anything else: normalising numbers first turned `ghp_1234…` into
`ghp_<n>…`, which no secret shape matches (core/redact.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core.redact import redact_lines, redact_text

DEFAULT_PATTERNS = (
    r"\b(?:ERROR|FATAL|CRITICAL|SEVERE|EMERG|ALERT)\b",
    r"(?i:\blevel\W{0,4}(?:error|fatal|crit(?:ical)?)\b)",  # level=error, "level": "error"
    r"Exception\b",
    r"Traceback \(most recent call last\)",
    r"\bpanic(?::|\()",
    r"(?i:connection refused)",
    r"(?i:\btime(?:d)?[ _-]?out\b)",
    r"\" 5\d\d \d",  # access logs (common/combined format): a 5xx status after the request
    r"(?i:\bstatus(?:_code)?\W{1,3}5\d\d\b)",
)
PATTERN_MAX = 500
# A quantified group that itself holds a quantifier, e.g. (a+)+ or (\w*x)*: Python's re has no timeout, and such
# patterns can backtrack for minutes on one long line; refusing them (and capping lines) keeps matching linear.
NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)(?:[+*]|\{\d*,)")
LINE_MAX = 4096  # characters of a line that are matched and kept
RECORD_MAX_LINES = 200
GROUPS_MAX = 10_000

# Leading timestamps: ISO 8601 ("2026-12-01T10:00:00.123Z", "2026-12-01 10:00:00,123", in brackets or not),
# syslog ("Dec  1 10:00:00", no year), and JSON lines' "time"/"timestamp"/"ts" fields; and the common log
# format's "[01/Dec/2026:10:00:00 +0000]" after the client address.
_ISO = r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:[.,](\d{1,9}))?\s?(Z|[+-]\d{2}(?::?\d{2})?)?"
ISO_START = re.compile(r"\[?" + _ISO + r"\]?")
ISO_ANY = re.compile(r"\b" + _ISO)
SYSLOG_START = re.compile(r"([A-Z][a-z]{2}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2})\b")
JSON_TIME = re.compile(r'"(?:@timestamp|timestamp|time|ts)"\s*:\s*"')
CLF_TIME = re.compile(r"\[(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-]\d{4})\]")
MONTHS = {m: n for n, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), start=1)}
_BACKREFERENCE = re.compile(r"\\\d|\(\?P=")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
# Lines that say the program's configuration is wrong: a restart runs the same configuration and fails the same way.
CONFIG_ERROR = re.compile(
    r"\b(?:config(?:uration)?[ _-]?(?:error|invalid|is invalid)"
    r"|invalid (?:config(?:uration)?|setting|option|parameter|directive)"
    r"|unknown (?:config(?:uration)? )?(?:option|directive|setting|parameter)"
    r"|missing (?:required )?(?:config(?:uration)?|setting|option|environment variable|env var)"
    r"|(?:failed|unable|could not|cannot) (?:to )?(?:load|parse|read) (?:the )?config(?:uration)?"
    r"|config(?:uration)? file\b.{0,80}\b(?:not found|missing|invalid|no such file)"
    r"|EX_CONFIG)\b",
    re.IGNORECASE,
)

# What makes repeats of one error differ: masked so they group (timestamps, ids, addresses, numbers).
_MASKS = (
    (re.compile(ISO_ANY.pattern), "<ts>"),
    (CLF_TIME, "[<ts>]"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{12,}\b", re.I), "<id>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
)
# HTTP statuses stay: 502 and 503 are different problems.
_STATUS = re.compile(r'(?:(?<=HTTP )|(?<=" )|(?<=status=)|(?<=status: )|(?<="status":)|(?<="status": ))([1-5]\d\d)\b')
_NUMBER = re.compile(r"(?<![A-Za-z\d.\x01])\d+(?:\.\d+)*")


def _iso(match: re.Match[str]) -> datetime:
    date, clock, fraction, zone = match.groups()
    zone = {None: "", "Z": "+00:00"}.get(zone, zone)
    if zone and ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:] or '00'}"
    return datetime.fromisoformat(f"{date}T{clock}.{(fraction or '0')[:6].ljust(6, '0')}{zone}")


def parse_time(line: str, now: datetime) -> tuple[datetime | None, int]:
    """The line's timestamp (aware; a zoneless one is the host's local time) and where a leading one ends."""
    try:
        if match := ISO_START.match(line):
            return _aware(_iso(match)), match.end()
        if match := SYSLOG_START.match(line):
            month, day, hh, mm, ss = match.groups()
            local = now.astimezone()
            when = datetime(local.year, MONTHS[month], int(day), int(hh), int(mm), int(ss)).astimezone()
            if when > local + timedelta(days=1):  # no year in syslog: December's lines read in January
                when = when.replace(year=local.year - 1)
            return when, match.end()
        if (
            line.startswith("{")
            and (key := JSON_TIME.search(line, 0, 200))
            and (match := ISO_ANY.match(line, key.end()))
        ):
            return _aware(_iso(match)), 0
        if match := CLF_TIME.search(line, 0, 200):
            day, month, year, hh, mm, ss, zone = match.groups()
            stamp = f"{year}-{MONTHS[month]:02d}-{int(day):02d}T{hh}:{mm}:{ss}{zone[:3]}:{zone[3:]}"
            return datetime.fromisoformat(stamp), 0
    except (ValueError, KeyError):  # "2026-13-45", "Foo  1 10:00:00": not a timestamp after all
        pass
    return None, 0


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.astimezone()


def normalise(line: str) -> str:
    """The line with what varies between repeats masked, its leading timestamp dropped."""
    text = line[parse_time(line, datetime.now(UTC))[1] :].strip()
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    text = _NUMBER.sub("<n>", _STATUS.sub("\x01\\1", text)).replace("\x01", "")
    return re.sub(r"\s+", " ", text)[:300]


@dataclass
class Record:
    """One log entry: a line with its time, and the untimed lines after it (a traceback)."""

    when: datetime | None
    lines: list[str]


def records(lines: Iterable[str], now: datetime) -> Iterator[Record]:
    """The entries of raw lines, each line redacted and cut to LINE_MAX (in that order)."""
    current: Record | None = None
    for line in redact_lines((raw.rstrip("\r") for raw in lines), LINE_MAX):
        if not line.strip():
            continue
        when, _ = parse_time(line, now)
        if when is None and current is not None and current.when is not None:
            if len(current.lines) < RECORD_MAX_LINES:
                current.lines.append(line)
                continue
            when = current.when  # a very long trace: go on in a new record of the same time
        if current is not None:
            yield current
        current = Record(when, [line])
    if current is not None:
        yield current


def loki_record(when: datetime, line: str) -> Record:
    """One Loki entry (its lines are one string), redacted and cut to LINE_MAX."""
    return Record(when, [redact_text(line, LINE_MAX)])


class Matcher:
    """Whether a line matches any of the patterns: one alternation when they combine, else each in turn."""

    def __init__(self, patterns: list[str]) -> None:
        self._each = [re.compile(p) for p in patterns]
        if not any(_BACKREFERENCE.search(p) for p in patterns):  # numbered groups shift in an alternation
            try:
                self._each = [re.compile("|".join(f"(?:{p})" for p in patterns))]
            except re.error:  # e.g. a global flag such as (?i) that is not at the start any more
                pass

    def __call__(self, line: str) -> bool:
        return any(p.search(line) for p in self._each)


@dataclass
class Group:
    line: str
    example: str
    count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    sources: set[str] = field(default_factory=set)


class Scan:
    """The error records seen, grouped by the normalised text of their telling line."""

    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher
        self.groups: dict[str, Group] = {}
        self.errors = 0

    def add(self, record: Record, source: str) -> int:
        """1 if the record is an error (counted in its group), else 0."""
        hit = next((line for line in record.lines if self.matcher(line)), None)
        if hit is None:
            return 0
        if len(record.lines) > 1 and any(TRACEBACK.search(line) for line in record.lines):
            last = record.lines[-1].strip()  # a Python traceback ends with what was raised
            hit = last if TRACEBACK.search(hit) else f"{hit} … {last}"
        key = normalise(hit)
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= GROUPS_MAX:
                key = "(other errors: too many distinct lines to group)"
            group = self.groups.setdefault(key, Group(line=key, example="\n".join(record.lines)[:1000]))
        self.errors += 1
        group.count += 1
        group.sources.add(source)
        if record.when is not None:
            group.first_seen = min(group.first_seen or record.when, record.when)
            group.last_seen = max(group.last_seen or record.when, record.when)
        return 1

    def top(self, n: int) -> list[dict[str, Any]]:
        ranked = sorted(self.groups.values(), key=lambda g: (g.count, g.last_seen or datetime.min.replace(tzinfo=UTC)))
        return [
            {
                "line": g.line,
                "example": g.example,
                "count": g.count,
                "first_seen": g.first_seen.isoformat() if g.first_seen else None,
                "last_seen": g.last_seen.isoformat() if g.last_seen else None,
                "sources": sorted(g.sources)[:5],
            }
            for g in reversed(ranked[-n:])
        ]


def config_error_groups(top: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The error groups (as Scan.top gives them) whose line says the configuration is wrong."""
    return [group for group in top if CONFIG_ERROR.search(group["line"])]


def pattern_problem(pattern: str) -> str | None:
    """Why an error pattern cannot be used, or None."""
    if len(pattern) > PATTERN_MAX:
        return f"is longer than {PATTERN_MAX} characters"
    if NESTED_QUANTIFIER.search(pattern):
        return "has a quantified group holding a quantifier (e.g. (a+)+), which can backtrack without end"
    try:
        re.compile(pattern)
    except re.error as err:
        return f"does not compile: {err}"
    return None
