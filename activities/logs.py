"""investigate_logs: the error lines of the service's logs over the last minutes, grouped so repeats count once.

Reads files under `settings.log_roots` only (every path and glob match is resolved, symlinks included, and
anything outside is refused unread), the end of each file only (`tail_bytes`), and optionally a Loki query.
A line without a timestamp belongs to the timestamped line before it (a traceback, a stack trace).
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx
from temporalio.exceptions import ApplicationError

from activities.base import AgentDeps, agent_result
from activities.heartbeat import beat, heartbeating
from activities.logscan import (
    DEFAULT_PATTERNS,
    Matcher,
    Scan,
    config_error_groups,
    loki_record,
    pattern_problem,
    records,
)
from core.agents import AgentSpec, object_schema
from core.outbound import blocked_reason
from core.payloads import AgentInput, AgentResult
from core.redact import redact_text

T = TypeVar("T")
MAX_FILES = 50
GLOB_CHARS = re.compile(r"[*?\[]")
LOKI_TIMEOUT = 30.0
COMPRESSED = {".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip"}

LOGS_SCHEMA = object_schema(
    {
        "paths": {
            "type": "array",
            "minItems": 1,
            "maxItems": 20,
            "items": {"type": "string", "minLength": 1, "maxLength": 1000},
            "description": "log files or glob patterns; relative ones are taken under each of the log roots",
        },
        "window_minutes": {"type": "number", "exclusiveMinimum": 0, "maximum": 10080, "default": 30},
        "patterns": {
            "type": "array",
            "minItems": 1,
            "maxItems": 50,
            "items": {"type": "string", "minLength": 1, "maxLength": 500},
        },
        "max_lines": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        "tail_bytes": {"type": "integer", "minimum": 1024, "maximum": 100 * 2**20, "default": 5 * 2**20},
        "loki_url": {"type": "string", "pattern": r"^https?://\S+$", "maxLength": 500},
        "loki_query": {"type": "string", "minLength": 1, "maxLength": 5000},
        "loki_limit": {"type": "integer", "minimum": 1, "maximum": 5000, "default": 1000},
        "loki_tenant": {"type": "string", "maxLength": 200},
    }
)
# Files, or a Loki query (both may be given); a Loki query needs its URL and vice versa. With neither, the files
# are the registered service's `log_paths` (POST /api/services).
LOGS_SCHEMA |= {"dependentRequired": {"loki_url": ["loki_query"], "loki_query": ["loki_url"]}}


async def _in_thread(detail: str, call: Callable[..., T], *args: Any) -> T:
    """call(*args) off the event loop, heartbeating while it runs (a big tail takes a while)."""
    return await heartbeating(asyncio.to_thread(call, *args), detail)


def compile_patterns(patterns: list[str]) -> Matcher:
    """The error patterns as one matcher, or ApplicationError naming the one that cannot be used."""
    for n, pattern in enumerate(patterns):
        if problem := pattern_problem(pattern):
            # Retrying cannot help: the step's params must change (as for the schema check in as_activity).
            raise ApplicationError(
                f"investigate_logs: params.patterns.{n}: {pattern!r} {problem}",
                type="InvalidParams",
                non_retryable=True,
            )
    return Matcher(patterns)


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def resolve_paths(paths: list[str], roots: list[Path]) -> tuple[list[tuple[str, Path]], list[dict[str, str]]]:  # noqa: C901 (each refusal of a path is its own message)
    """The files to read as (as named, resolved), and what was refused or not found, each {"path", "reason"}."""
    files: dict[Path, str] = {}
    problems: list[dict[str, str]] = []
    for given in paths:
        candidates = [Path(given)] if os.path.isabs(given) else [root / given for root in roots]
        found = False
        for candidate in candidates:
            if GLOB_CHARS.search(str(candidate)):
                if not _inside(
                    Path(*_static_parts(candidate)).resolve(), roots
                ):  # never list a directory outside the roots
                    problems.append({"path": given, "reason": "is outside the log roots: refused, not read"})
                    found = True
                    continue
                matches, explicit = sorted(glob.glob(str(candidate), recursive=True)), False
            else:
                matches, explicit = [str(candidate)] if os.path.lexists(candidate) else [], True
            for match in matches:
                found = True
                try:
                    real = Path(match).resolve(strict=True)
                except (OSError, RuntimeError) as err:  # a dangling symlink or a loop
                    problems.append({"path": match, "reason": f"cannot be resolved ({err.__class__.__name__})"})
                    continue
                if not _inside(real, roots):
                    where = "" if real == Path(match) else f"resolves to {real}, which "
                    problems.append({"path": match, "reason": f"{where}is outside the log roots: refused, not read"})
                elif not real.is_file():
                    if explicit:  # a glob's directories are not worth a word
                        problems.append({"path": match, "reason": "is not a regular file"})
                elif real not in files:
                    files[real] = match
        if not found:
            problems.append({"path": given, "reason": "does not exist"})
    chosen = [(shown, real) for real, shown in files.items()]
    if len(chosen) > MAX_FILES:
        problems.append({"path": f"{len(chosen) - MAX_FILES} more files", "reason": f"not read: at most {MAX_FILES}"})
    return chosen[:MAX_FILES], problems


def _static_parts(pattern: Path) -> list[str]:
    parts = []
    for part in pattern.parts:
        if GLOB_CHARS.search(part):
            break
        parts.append(part)
    return parts


def read_tail(path: Path, tail_bytes: int, since: datetime) -> tuple[dict[str, Any], list[str]]:
    """The file's entry and its last lines (at most tail_bytes, from a line start)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)  # a swapped-in FIFO: no hang
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        entry: dict[str, Any] = {"size": info.st_size, "read_bytes": 0, "truncated": False}
        if not stat.S_ISREG(info.st_mode):
            return {**entry, "skipped": "not a regular file"}, []
        if path.suffix in COMPRESSED:
            return {**entry, "skipped": "compressed (an older rotation): not read"}, []
        if info.st_mtime < since.timestamp():
            return {**entry, "skipped": "not written to in the window"}, []
        offset = max(0, info.st_size - tail_bytes)
        file.seek(offset)
        raw = file.read(tail_bytes)
    if offset > 0:
        raw = raw[raw.find(b"\n") + 1 :]  # the first line is cut: start at the next one
    entry.update(read_bytes=len(raw), truncated=offset > 0)
    return entry, raw.decode("utf-8", "replace").split("\n")


def scan_file(shown: str, path: Path, tail_bytes: int, since: datetime, now: datetime, scan: Scan) -> dict[str, Any]:
    entry, lines = read_tail(path, tail_bytes, since)
    entry = {"path": shown, **entry, "lines_in_window": 0, "errors": 0}
    found = list(records(lines, now))
    timed = any(r.when is not None for r in found)
    entry["timestamps"] = timed
    for record in found:
        # A file with timestamps: untimed lines before its first one are the cut-off end of an older entry.
        if (record.when is None and not timed) or (record.when is not None and record.when >= since):
            entry["lines_in_window"] += len(record.lines)
            entry["errors"] += scan.add(record, shown)
    return entry


def _loki_unavailable(url: str, what: str) -> ApplicationError:
    """Loki down, slow or overloaded: Temporal retries. Not httpx's message, which quotes the URL (it may hold
    credentials) and the query: the error is kept in the workflow's history and shown with the step."""
    return ApplicationError(
        f"investigate_logs: Loki at {httpx.URL(url).host} is unavailable ({what})", type="LokiUnavailable"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


class InvestigateLogsAgent:
    spec: ClassVar[AgentSpec] = AgentSpec(
        name="investigate_logs",
        version="1.0.0",
        simulation="read",  # it only reads: a dry run runs it for real
        description="Error lines of log files under the log roots (and/or a Loki query) in the last minutes, "
        "grouped by their normalised text: counts, first and last seen",
        capabilities=("investigation",),
        params_schema=LOGS_SCHEMA,
        default_risk="low",
    )

    def __init__(self, deps: AgentDeps) -> None:
        self._deps = deps

    async def run(self, input: AgentInput) -> AgentResult:
        params = input.params
        minutes = float(params.get("window_minutes", 30))
        scan = Scan(compile_patterns(list(params.get("patterns") or DEFAULT_PATTERNS)))
        now = datetime.now(UTC)
        since = now - timedelta(minutes=minutes)
        roots = [Path(root).resolve() for root in self._deps.settings.log_roots]
        paths = list(params.get("paths") or [])
        if not paths and not params.get("loki_url"):
            paths = list(((input.context or {}).get("service") or {}).get("log_paths") or [])
            if not paths:
                return agent_result(
                    False,
                    "no logs to read: give params.paths or params.loki_url, or register the service's log_paths",
                    data={"configured": False, "files": [], "not_read": []},
                )
        files, problems = await _in_thread("listing the log files", resolve_paths, paths, roots)
        entries = []
        for shown, path in files:
            try:
                tail = int(params.get("tail_bytes", 5 * 2**20))
                entry = await _in_thread(f"reading {shown}", scan_file, shown, path, tail, since, now, scan)
            except OSError as err:  # gone or unreadable since it was listed: say so, read the others
                problems.append({"path": shown, "reason": f"cannot be read: {err.strerror or err}"})
                continue
            entries.append(entry)
        loki = await self._loki(params, since, now, scan) if params.get("loki_url") else None
        return self._result(params, minutes, since, now, scan, entries, problems, loki)

    async def _loki(self, params: dict[str, Any], since: datetime, now: datetime, scan: Scan) -> dict[str, Any]:
        """Query Loki's query_range for the window, newest first, and scan its lines like a file's."""
        url = params["loki_url"].rstrip("/") + "/loki/api/v1/query_range"
        limit = int(params.get("loki_limit", 1000))
        query = {
            "query": params["loki_query"],
            "start": str(int(since.timestamp() * 1e9)),
            "end": str(int(now.timestamp() * 1e9)),
            "limit": str(limit),
            "direction": "backward",
        }
        headers = {"X-Scope-OrgID": params["loki_tenant"]} if params.get("loki_tenant") else {}
        beat("querying Loki")
        try:
            response = await self._deps.http.get(url, params=query, headers=headers, timeout=LOKI_TIMEOUT)
        except httpx.HTTPError as err:
            if (reason := blocked_reason(err)) is not None:  # configuration: retrying cannot help
                raise ApplicationError(
                    f"investigate_logs: Loki {reason}", type="BlockedTarget", non_retryable=True
                ) from err
            raise _loki_unavailable(url, type(err).__name__) from None
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise _loki_unavailable(url, f"HTTP {response.status_code}: {redact_text(response.text, 300)}")
        body: Any = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        body = body if isinstance(body, dict) else {}
        result = body.get("data") if isinstance(body.get("data"), dict) else {}
        if response.status_code >= 400 or body.get("status") != "success" or result.get("resultType") != "streams":
            # A bad query or a metric query (not a log query): the step's params must change.
            detail = "the answer is not a log streams result"
            if response.status_code >= 400:
                detail = redact_text(response.text, 300)
            raise ApplicationError(
                f"investigate_logs: Loki refused the query (HTTP {response.status_code}): {detail}",
                type="InvalidParams",
                non_retryable=True,
            )
        values = sorted(
            (int(ns), str(line)) for stream in result.get("result", []) for ns, line in stream.get("values", [])
        )
        entry: dict[str, Any] = {
            "path": redact_text(f"loki: {params['loki_query']}", 300),
            "streams": len(result.get("result", [])),
        }
        entry |= {"lines_in_window": len(values), "errors": 0, "truncated": len(values) >= limit}
        for ns, line in values:
            entry["errors"] += scan.add(loki_record(datetime.fromtimestamp(ns / 1e9, UTC), line), "loki")
        return entry

    def _result(
        self,
        params: dict[str, Any],
        minutes: float,
        since: datetime,
        now: datetime,
        scan: Scan,
        entries: list[dict[str, Any]],
        problems: list[dict[str, str]],
        loki: dict[str, Any] | None,
    ) -> AgentResult:
        window = f"{minutes:g} min"
        sources = [Path(e["path"]).name for e in entries if "skipped" not in e] + (["loki"] if loki else [])
        sources = sources or [Path(e["path"]).name for e in entries]
        label = ", ".join(sources) if len(sources) <= 2 else f"{sources[0]} and {len(sources) - 1} more"
        top = scan.top(int(params.get("max_lines", 20)))
        findings = [
            {
                "title": f"{group['count']}× {group['line'][:150]}",
                "detail": f"first seen {group['first_seen']}, last seen {group['last_seen']}; e.g. "
                + group["example"][:500],
                "severity": "error",
            }
            for group in top[:5]
        ]
        findings += [
            {"title": f"not read: {p['path']}", "detail": f"{p['path']} {p['reason']}", "severity": "warning"}
            for p in problems
        ]
        refused = f"; {_count(len(problems), 'path')} not read" if problems else ""
        if not entries and not loki:
            summary = "nothing read: " + "; ".join(f"{p['path']} {p['reason']}" for p in problems[:3])
        elif scan.errors:
            head = top[0]
            summary = f"{label}: {_count(scan.errors, 'error')} in the last {window}; "
            summary += f"top: {head['line'][:120]} ({head['count']}×){refused}"
        else:
            lines = sum(e["lines_in_window"] for e in [*entries, *([loki] if loki else [])])
            summary = f"{label}: no errors in the last {window} ({_count(lines, 'line')} in the window){refused}"
        config = config_error_groups(top)
        if config:  # the same configuration would be read again: say so before anyone approves a restart
            head = config[0]
            said = f"{head['line'][:120]} ({head['count']}×)"
            summary = f"configuration error, a restart is unlikely to fix it: {said}; {summary}"
            findings.insert(0, {
                "title": "configuration error: a restart is unlikely to fix it",
                "detail": f"{head['count']}× {head['line'][:300]}; a restart reads the same configuration: fix it "
                "first (or roll the change back), then restart",
                "severity": "error",
            })  # fmt: skip
        data = {
            "files": entries,
            "error_count": scan.errors,
            "top": top,
            "window": {"minutes": minutes, "start": since.isoformat(), "end": now.isoformat()},
            "not_read": problems,
            "loki": loki,
            # For playbooks' `when`: false when the errors say the configuration is wrong (a restart cannot help).
            "restart_helps": not config,
            "diagnosis": "config_error" if config else ("errors" if scan.errors else "clean"),
        }
        evidence = "\n".join(
            f"{g['count']}× {g['line']}  (first {g['first_seen']}, last {g['last_seen']})\n"
            f"    e.g. {g['example'][:300]}"
            for g in top[:10]
        )
        messages = [{"role": "tool", "content": f"Top error lines, {label}, last {window}:\n{evidence}"[:4000]}]
        clean = bool(entries or loki) and scan.errors == 0
        return agent_result(
            clean,
            summary,
            data=data,
            findings=findings,
            # Clean logs settle it, unless a path could not be read: its lines might have told otherwise.
            resolved=True if clean and not problems else None,
            messages=messages if top else [],
        )
