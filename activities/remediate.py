"""Remediation agents: run an allowlisted command (remediate_command), call a signed webhook (remediate_webhook).

Both are risk high, which no playbook or run-time change can lower, so a step using them waits for a person's
approval unless an admin's policy pre-approves it (core/approvals.py; never a step changed at run time). Temporal
runs an activity at least once; each records its intent before it acts and its outcome after
(activities/remediation_ledger.py), so a retry of the same step attempt reports what the first did instead of
acting again: a command runs at most once per step attempt; a webhook is re-sent only under the same webhook-id,
and never after an answer that ended the step.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import time
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import httpx
from standardwebhooks import Webhook
from temporalio.exceptions import ApplicationError

from activities.base import AgentDeps, agent_result
from activities.heartbeat import attempt, heartbeating
from activities.process_group import OUTPUT_TAIL, OutputTail, run_to_exit, signal_name
from activities.remediation_ledger import RemediationLedger, attempt_key
from core.agents import AgentSpec, object_schema
from core.commands import NEVER_ENV, CommandNotAllowed, allowed_rule
from core.outbound import blocked_reason
from core.payloads import AgentInput, AgentResult
from core.redact import redact_text

T = TypeVar("T")
BODY_MAX = 4 * 1024
# Syntax here; which names a step may set is its COMMAND_ALLOWLIST entry's say (core/commands.py), and some never.
ENV_NAME = rf"^(?!(?:{NEVER_ENV.pattern})$)[A-Z_][A-Z0-9_]{{0,99}}$"
# Headers this agent sets itself: the signature covers them, so a playbook may not.
_RESERVED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature", "idempotency-key", "content-length",
                     "host", "transfer-encoding")  # fmt: skip
_RESERVED = "|".join("".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in h) for h in _RESERVED_HEADERS)
HEADER_NAME = rf"^(?!(?:{_RESERVED})$)[A-Za-z0-9-]{{1,64}}$"
# A rejection the receiver means as "later": retried like a 5xx.
_TRANSIENT_4XX = (408, 425, 429)


def _shorten(text: str, limit: int) -> str:
    """At most `limit` characters, redacted before the cut (half a secret matches no shape)."""
    return redact_text(text) if len(text) <= limit else redact_text(text, limit - 1) + "…"


def _redacted_tail(tail: OutputTail) -> str:
    """A command's output as kept (its end), redacted first; when the front was cut, its first partial line goes,
    as it may start inside a secret. Cut later, it can only lose masks, never show part of a secret."""
    text = tail.text
    if tail.total > OUTPUT_TAIL:
        text = text.partition("\n")[2]
    return redact_text(text)


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def minimal_environment() -> dict[str, str]:
    """PATH, LANG and HOME of the worker, nothing else: its secrets (database URL, tokens) stay with it."""
    return {
        "PATH": os.environ.get("PATH") or os.defpath,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "HOME": os.environ.get("HOME") or "/",
    }


class RemediateCommandAgent:
    spec: ClassVar[AgentSpec] = AgentSpec(
        name="remediate_command",
        version="1.0.0",
        description="Runs a command that an entry of COMMAND_ALLOWLIST allows whole, argv, env and cwd (never a "
        "shell), with a timeout; ok when it exits with expect_exit",
        capabilities=("remediation",),
        params_schema=object_schema(
            {
                "argv": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 100,
                    "items": {"type": "string", "maxLength": 4096, "pattern": "^[^\\u0000]*$"},
                },
                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
                "cwd": {"type": "string", "pattern": "^/[^\\u0000]*$", "maxLength": 4096},
                "env": {
                    "type": "object",
                    "maxProperties": 20,
                    "propertyNames": {"pattern": ENV_NAME},
                    "additionalProperties": {"type": "string", "maxLength": 4096, "pattern": "^[^\\u0000]*$"},
                },
                "expect_exit": {"type": "integer", "minimum": 0, "maximum": 255},
            },
            required=("argv",),
        ),
        default_risk="high",
    )

    def __init__(self, deps: AgentDeps) -> None:
        self._settings = deps.settings
        self._ledger = RemediationLedger(deps.engine, self.spec.name, deps.settings)

    def _checked(self, params: dict[str, Any]) -> tuple[list[str], float]:
        # Configuration errors: retrying cannot help, the playbook or COMMAND_ALLOWLIST must change.
        argv: list[str] = list(params["argv"])
        allowlist = self._settings.command_allowlist
        if not allowlist:
            raise ApplicationError(
                "remediate_command runs nothing until COMMAND_ALLOWLIST is set", type="NotAllowed", non_retryable=True
            )
        try:
            allowed_rule(allowlist, argv, params.get("env"), params.get("cwd"))
        except CommandNotAllowed as err:
            raise ApplicationError(str(err), type="NotAllowed", non_retryable=True) from None
        limit = self._settings.command_timeout_seconds
        timeout = float(params.get("timeout_seconds", limit))
        if timeout > limit:
            raise ApplicationError(
                f"timeout_seconds {timeout:g} is above COMMAND_TIMEOUT_SECONDS ({limit:g})",
                type="InvalidParams",
                non_retryable=True,
            )
        return argv, timeout

    def describe(self, input: AgentInput) -> str:
        """What a run would do, for a dry run (which never runs it): the argv, and whether COMMAND_ALLOWLIST
        allows it."""
        argv: list[str] = list(input.params.get("argv") or [])
        try:
            self._checked(input.params)
            allowed = "allowlisted: yes"
        except ApplicationError as err:
            allowed = f"allowlisted: no — {err.message}"
        env = input.params.get("env") or {}
        where = f" in {input.params['cwd']}" if input.params.get("cwd") else ""
        with_env = f" with env {', '.join(sorted(env))}" if env else ""
        return _shorten(f"would run argv {json.dumps(argv)}{where}{with_env} ({allowed})", 2000)

    async def run(self, input: AgentInput) -> AgentResult:
        argv, timeout = self._checked(input.params)
        env = {**minimal_environment(), **input.params.get("env", {})}
        found = await asyncio.to_thread(shutil.which, argv[0], path=env["PATH"])
        if found is None:
            raise ApplicationError(
                f"{argv[0]} is not an executable on PATH {env['PATH']}", type="NotFound", non_retryable=True
            )
        executable = os.path.abspath(found)  # which() answers relative to the worker's directory
        if (earlier := await self._ledger.claim(input, shlex.join(argv))) is not None:
            return earlier.repeat("command")  # a retry of this step attempt: never a second run
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                executable,
                *argv[1:],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=input.params.get("cwd"),
                env=env,
                start_new_session=True,  # its own process group: a timeout kills what it started too
            )
        except OSError as err:
            await self._ledger.release(input)  # nothing started: a retry may run it
            if isinstance(err, (FileNotFoundError, NotADirectoryError, PermissionError)):
                # The executable or cwd is wrong: a configuration error. Other OSErrors (no memory, too many
                # processes) are transient and raise as they are, for Temporal to retry.
                raise ApplicationError(
                    f"cannot start {executable}: {err}", type="NotFound", non_retryable=True
                ) from err
            raise
        out, err_ = OutputTail(), OutputTail()
        try:
            timed_out = await run_to_exit(process, out, err_, started, timeout)
        except asyncio.CancelledError:
            stopped = f"cancelled after {time.monotonic() - started:.1f} s (process group killed)"
            await self._ledger.finish(input, error=stopped, exit_code=process.returncode)
            raise
        duration = time.monotonic() - started
        result = self._result(argv, executable, process.returncode, out, err_, duration, timed_out, timeout, input)
        await self._ledger.finish(input, result, exit_code=process.returncode)
        return result

    def _result(
        self,
        argv: list[str],
        executable: str,
        code: int | None,
        out: OutputTail,
        err: OutputTail,
        duration: float,
        timed_out: bool,
        timeout: float,
        input: AgentInput,
    ) -> AgentResult:
        expect = int(input.params.get("expect_exit", 0))
        exit_code = -1 if code is None else code
        ok = exit_code == expect and not timed_out
        shown = _shorten(shlex.join(argv), 200)
        if timed_out:
            outcome = f"timed out after {timeout:g} s (process group killed)"
        elif exit_code < 0:
            outcome = f"killed by {signal_name(-exit_code)}"
        else:
            outcome = f"exit {exit_code}" + ("" if ok or expect == 0 else f", expected {expect}")
        stdout, stderr = _redacted_tail(out), _redacted_tail(err)
        if ok:
            summary = f"ran {shown}: {outcome} in {duration:.1f} s"
        else:
            which, last = ("stderr", _last_line(stderr)) if _last_line(stderr) else ("stdout", _last_line(stdout))
            summary = f"ran {shown}: {outcome}" + (f" ({which}: {_shorten(last, 200)})" if last else "")
        truncated = out.total > OUTPUT_TAIL or err.total > OUTPUT_TAIL
        evidence = f"$ {redact_text(shlex.join(argv))}\n({executable}) {outcome} in {duration:.1f} s"
        for name, text in (("stdout", stdout), ("stderr", stderr)):
            if text.strip():
                evidence += f"\n--- {name} (end) ---\n{text[-2000:]}"
        findings = []
        if not ok:
            detail = (stderr.strip() or stdout.strip())[-1000:] or "no output"
            findings.append({"title": f"{shown}: {outcome}", "detail": detail, "severity": "high"})
        return agent_result(
            ok,
            summary,
            data={
                "argv": argv,
                "executable": executable,
                "exit_code": code,
                "stdout": stdout,
                "stderr": stderr,
                "truncated": truncated,
                "duration_ms": round(duration * 1000),
                "timed_out": timed_out,
                "attempt": attempt(),
            },
            findings=findings,
            messages=[{"role": "tool", "content": evidence, "metadata": {"exit_code": code, "timed_out": timed_out}}],
        )


def webhook_id(input: AgentInput) -> str:
    """The same for every attempt of one run of the step (not for a retry_step, which is a new decision)."""
    return f"{input.workflow_id}:{input.step_id}:{attempt_key(input)}"


def _shown_url(url: httpx.URL) -> str:
    """The URL without credentials or query, which may carry tokens."""
    return f"{url.scheme}://{url.netloc.decode()}{url.path}"


class RemediateWebhookAgent:
    spec: ClassVar[AgentSpec] = AgentSpec(
        name="remediate_webhook",
        version="1.0.0",
        description="POSTs (or PUTs) a JSON payload to a deploy/rollback endpoint, signed per Standard Webhooks "
        "with REMEDIATION_WEBHOOK_SECRET; ok when the status is the expected one (any 2xx by default)",
        capabilities=("remediation",),
        params_schema=object_schema(
            {
                "url": {"type": "string", "pattern": "^https?://\\S+$", "maxLength": 2000},
                "method": {"enum": ["POST", "PUT"]},
                "payload": {"type": "object"},
                "headers": {
                    "type": "object",
                    "maxProperties": 20,
                    "propertyNames": {"pattern": HEADER_NAME},
                    "additionalProperties": {"type": "string", "maxLength": 1000, "pattern": "^[^\\r\\n]*$"},
                },
                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
                "expect_status": {"type": "integer", "minimum": 100, "maximum": 599},
            },
            required=("url",),
        ),
        default_risk="high",
    )

    def __init__(self, deps: AgentDeps) -> None:
        self._http = deps.http
        self._settings = deps.settings
        self._ledger = RemediationLedger(deps.engine, self.spec.name, deps.settings)

    def describe(self, input: AgentInput) -> str:
        """What a run would do, for a dry run (which never sends it): the request, and whether it could be signed."""
        url = _shown_url(httpx.URL(input.params["url"]))
        keys = sorted((input.params.get("payload") or {}).keys())
        payload = f" with a JSON payload ({', '.join(keys)})" if keys else ""
        signed = "signed" if self._settings.remediation_webhook_secret.get_secret_value() else (
            "REMEDIATION_WEBHOOK_SECRET is not set: it would fail unsigned")  # fmt: skip
        return _shorten(f"would {input.params.get('method', 'POST')} to {url}{payload} ({signed})", 2000)

    async def run(self, input: AgentInput) -> AgentResult:
        secret = self._settings.remediation_webhook_secret.get_secret_value()
        if not secret:  # configuration: no retry can sign the request
            raise ApplicationError(
                "remediate_webhook signs every request: set REMEDIATION_WEBHOOK_SECRET (whsec_…)",
                type="NotConfigured",
                non_retryable=True,
            )
        message_id = webhook_id(input)
        action = f"{input.params.get('method', 'POST')} {_shown_url(httpx.URL(input.params['url']))}"
        if (earlier := await self._ledger.claim(input, f"{action} (webhook-id {message_id})")) is not None:
            if earlier.finished_at is not None:  # answered in a way that ended it: never sent again
                return earlier.repeat("request", ran="was sent", run="sent")
            # A timeout, a 5xx or a lost worker left it open: the same webhook-id again, which the receiver
            # deduplicates on.
            await self._ledger.count_send(input)
        try:
            result = await self._deliver(input, secret, message_id)
        except ApplicationError as err:
            if err.non_retryable:
                await self._ledger.finish(input, error=err.message)
            else:
                await self._ledger.note_failure(input, err.message)
            raise
        await self._ledger.finish(input, result, http_status=result.data["status"])
        return result

    async def _deliver(self, input: AgentInput, secret: str, message_id: str) -> AgentResult:
        params = input.params
        method = params.get("method", "POST")
        timeout = float(params.get("timeout_seconds", 10))
        given: dict[str, str] = params.get("headers", {})
        sent_at = datetime.now(UTC)  # per attempt: receivers refuse stale timestamps
        body = json.dumps(params.get("payload", {}))
        headers = httpx.Headers({"content-type": "application/json"})
        headers.update(given)  # case-insensitively: a given Content-Type replaces ours
        headers["webhook-id"] = headers["idempotency-key"] = message_id
        headers["webhook-timestamp"] = str(int(sent_at.timestamp()))
        headers["webhook-signature"] = Webhook(secret).sign(message_id, sent_at, body)
        request = self._http.build_request(
            method, params["url"], content=body.encode(), headers=headers, timeout=timeout
        )
        named = {name.lower() for name in given}
        for name in ("authorization", "cookie"):  # nothing the shared client carries for other requests
            if name not in named:
                request.headers.pop(name, None)
        url = _shown_url(request.url)
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                status, location, raw, truncated, content_type = await heartbeating(
                    self._send(request), {"webhook_id": message_id}
                )
        except (TimeoutError, httpx.TimeoutException) as err:
            # Transient; it may have been acted on, but the retry carries the same webhook-id.
            raise ApplicationError(f"{method} {url} did not answer within {timeout:g} s", type="Timeout") from err
        except httpx.HTTPError as err:
            if (reason := blocked_reason(err)) is not None:  # the SSRF guard: only another URL can help
                raise ApplicationError(f"{method} {url}: {reason}", type="BlockedTarget", non_retryable=True) from err
            raise ApplicationError(
                f"{method} {url} failed: {str(err) or type(err).__name__}", type="Unreachable"
            ) from err
        duration_ms = round((time.monotonic() - started) * 1000)
        text = redact_text(raw.decode("utf-8", errors="replace"))  # before any cut: the excerpt, the evidence
        excerpt = _shorten(" ".join(text.split()), 300)
        expect = params.get("expect_status")
        ok = status == expect if expect is not None else 200 <= status < 300
        if not ok and (status >= 500 or status in _TRANSIENT_4XX):
            raise ApplicationError(f"{method} {url} answered HTTP {status}: {excerpt}", type="ServerError")
        if not ok and status >= 400:  # the receiver refuses this request: the same request again cannot help
            raise ApplicationError(
                f"{method} {url} answered HTTP {status} (not retried): {excerpt}", type="Rejected", non_retryable=True
            )
        parsed = None
        if "json" in content_type and not truncated:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
        if ok:
            summary = f"{method} {url}: HTTP {status} in {duration_ms} ms"
        elif location is not None:
            summary = f"{method} {url}: HTTP {status} redirect to {_shorten(location, 200)}, not followed"
        else:
            summary = f"{method} {url}: HTTP {status}, expected " + (str(expect) if expect else "a 2xx")
        findings = [] if ok else [{"title": summary, "detail": excerpt or "empty body", "severity": "high"}]
        evidence = f"{method} {url} (webhook-id {message_id})\nHTTP {status} in {duration_ms} ms\n{text[:1000]}"
        return agent_result(
            ok,
            summary,
            data={
                "url": url,
                "method": method,
                "webhook_id": message_id,
                "status": status,
                "location": location,
                "body": text,
                "body_truncated": truncated,
                "json": parsed,
                "duration_ms": duration_ms,
                "attempt": attempt(),
            },
            findings=findings,
            messages=[{"role": "tool", "content": evidence, "metadata": {"status": status}}],
        )

    async def _send(self, request: httpx.Request) -> tuple[int, str | None, bytes, bool, str]:
        """Send without following redirects (a redirect is an answer to report); read at most BODY_MAX bytes."""
        response = await self._http.send(request, stream=True, follow_redirects=False, auth=None)
        try:
            raw = bytearray()
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) > BODY_MAX:
                    break
        finally:
            await response.aclose()
        location = response.headers.get("location") if response.is_redirect else None
        content_type = response.headers.get("content-type", "").lower()
        return response.status_code, location, bytes(raw[:BODY_MAX]), len(raw) > BODY_MAX, content_type
