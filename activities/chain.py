"""The agents of the default chain: monitor → investigate → remediate → verify."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from temporalio import activity

from activities.http_check import CheckOutcome, check_http
from activities.runs import AgentRunLog, recorded
from core.payloads import AgentInput, AgentResult
from core.redact import redact, redact_text

DIAGNOSES = {
    "refused": "nothing is listening: the service process is down or not bound to its port",
    "timeout": "the service accepts connections but does not answer: hung or overloaded",
    "dns": "the service's host name does not resolve",
    "unsafe_target": "the service URL points at a blocked address; fix the incident's service URL",
    "transport": "the connection failed below HTTP (TLS or network)",
}


def clean(ok: bool, summary: str, data: dict[str, Any]) -> AgentResult:
    """The agent's result with secrets redacted, before it enters workflow history or storage."""
    return AgentResult(ok=ok, summary=redact_text(summary), data=redact(data))


def _attempt() -> int:
    return activity.info().attempt


class ChainAgents:
    """Agents as bound-method activities; the HTTP client is injected so tests and workers share one."""

    def __init__(self, http: httpx.AsyncClient, *, check_timeout: float, runs: AgentRunLog | None = None) -> None:
        self._http = http
        self._timeout = check_timeout
        self.runs = runs or AgentRunLog(None)

    async def _check(self, url: str | None) -> CheckOutcome | None:
        return None if not url else await check_http(self._http, url, timeout=self._timeout)

    @activity.defn(name="monitor")
    @recorded("monitor")
    async def monitor(self, input: AgentInput) -> AgentResult:
        """HTTP GET on the incident's service URL."""
        outcome = await self._check(input.incident.service_url)
        if outcome is None:
            return clean(
                ok=False,
                summary=f"{input.incident.service}: no service URL to check",
                data={"checked": False, "attempt": _attempt()},
            )
        if outcome.healthy:
            summary = f"{input.incident.service} is up: HTTP {outcome.status_code} in {outcome.latency_ms} ms"
        else:
            summary = f"{input.incident.service} is DOWN: {outcome.error}"
        return clean(
            ok=outcome.healthy,
            summary=summary,
            data={"checked": True, "check": outcome.as_dict(), "attempt": _attempt()},
        )

    @activity.defn(name="investigate")
    @recorded("investigate")
    async def investigate(self, input: AgentInput) -> AgentResult:
        """Summarise what monitor saw into a diagnosis."""
        seen: dict[str, Any] = (input.previous_agent_output or {}).get("data", {})
        check = seen.get("check")
        if not check:
            diagnosis = "no check data: the incident has no service URL, so nothing could be observed"
            healthy = None
        elif check["healthy"]:
            diagnosis = f"the service answers normally (HTTP {check['status_code']}); the problem may be transient"
            healthy = True
        elif check["error_kind"] == "http_status":
            code = check["status_code"]
            side = "server-side failure" if code >= 500 else "the endpoint rejects the request"
            diagnosis = f"the service is up but answers HTTP {code}: {side}"
            if check.get("body_excerpt"):
                diagnosis += f"; it says: {check['body_excerpt'].strip()[:200]}"
            healthy = False
        else:
            diagnosis = DIAGNOSES.get(check["error_kind"], check["error"])
            healthy = False
        return clean(
            ok=healthy is not False,
            summary=f"{input.incident.service}: {diagnosis}",
            data={"diagnosis": diagnosis, "healthy": healthy, "observed": check, "attempt": _attempt()},
        )

    @activity.defn(name="remediate")
    @recorded("remediate")
    async def remediate(self, input: AgentInput) -> AgentResult:
        """Records that no remediation is configured; real actions arrive with the agents issue."""
        diagnosis = (input.previous_agent_output or {}).get("data", {}).get("diagnosis")
        return clean(
            ok=True,
            summary=f"no action: no remediation is configured for {input.incident.service}",
            data={"action": "none", "diagnosis": diagnosis, "attempt": _attempt()},
        )

    @activity.defn(name="verify")
    @recorded("verify")
    async def verify(self, input: AgentInput) -> AgentResult:
        """Re-check the service URL; a negative result fails the workflow."""
        outcome = await self._check(input.incident.service_url)
        if outcome is None:
            return clean(
                ok=False,
                summary="cannot verify: the incident has no service URL; resolve it by hand",
                data={"checked": False, "attempt": _attempt()},
            )
        summary = (
            f"verified: {input.incident.service} answers HTTP {outcome.status_code}"
            if outcome.healthy
            else f"verification failed: {input.incident.service} still down ({outcome.error})"
        )
        return clean(
            ok=outcome.healthy,
            summary=summary,
            data={"checked": True, "check": outcome.as_dict(), "attempt": _attempt()},
        )

    @activity.defn(name="noop")
    @recorded("noop")
    async def noop(self, input: AgentInput) -> AgentResult:
        """Nothing to do: ok, or params.ok; a placeholder or a join point."""
        ok = bool(input.params.get("ok", True))
        return clean(
            ok,
            str(input.params.get("summary", "nothing to do")),
            {"params": input.params, "attempt": _attempt()},
        )

    @activity.defn(name="sleep")
    @recorded("sleep")
    async def sleep(self, input: AgentInput) -> AgentResult:
        """Wait params.seconds, heartbeating twice a second so a stuck or dead worker is noticed."""
        seconds = float(input.params.get("seconds", 1))
        waited = 0.0
        while waited < seconds:
            activity.heartbeat(waited)
            step = min(0.5, seconds - waited)
            await asyncio.sleep(step)
            waited += step
        return clean(True, f"waited {seconds:g}s", {"seconds": seconds, "attempt": _attempt()})

    def all(self) -> list:
        return [self.monitor, self.investigate, self.remediate, self.verify, self.noop, self.sleep]
