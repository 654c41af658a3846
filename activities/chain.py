"""The agents of the default chain: monitor → investigate → remediate → verify."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.checks import CheckOutcome, policy_of, run_check
from activities.heartbeat import attempt, heartbeating
from activities.runs import AgentRunLog, recorded
from core.outbound import OutboundPolicy
from core.payloads import AgentInput, AgentResult
from core.redact import redact, redact_text

DIAGNOSES = {
    "refused": "nothing is listening: the service process is down or not bound to its port",
    "timeout": "the service accepts connections but does not answer: hung or overloaded",
    "dns": "the service's host name does not resolve",
    "unsafe_target": "the check points at a blocked address; fix the service's check or the incident's service URL",
    "transport": "the connection failed below HTTP (TLS or network)",
}
# Where a check's kind changes what an error means, keyed by (kind, error_kind); {target}, {error} filled in.
KIND_DIAGNOSES = {
    ("tcp", "refused"): "nothing is listening on {target}: the service process is down or not bound to its port",
    ("tcp", "timeout"): "connections to {target} get no answer: a firewall drops them or the host is down",
    ("tcp", "transport"): "cannot connect to {target} ({error}): the network or the host is down",
    ("dns", "dns"): "{target} does not resolve: the record is missing or the resolver is unreachable ({error})",
    ("dns", "timeout"): "the resolver does not answer for {target}: DNS is down or unreachable",
}
OTHER_DIAGNOSES = {
    "keyword": "the service answers HTTP {status_code} but not with the expected content ({error}): an error page, "
    "a broken deployment or a changed response",
    "tls": "its TLS certificate is not accepted ({error}): renew or fix the certificate",
    "unexpected_answer": "{error}: the DNS record points elsewhere (stale, mistyped or mid-migration)",
}
SHOWN_ANSWERS = 5


def clean(ok: bool, summary: str, data: dict[str, Any], findings: list[dict[str, Any]] | None = None) -> AgentResult:
    """The agent's result with secrets redacted, before it enters workflow history or storage."""
    return AgentResult(ok=ok, summary=redact_text(summary), data=redact(data), findings=redact(findings or []))


def _answers(outcome: CheckOutcome) -> str:
    answers = outcome.answers or []
    more = f" and {len(answers) - SHOWN_ANSWERS} more" if len(answers) > SHOWN_ANSWERS else ""
    return ", ".join(answers[:SHOWN_ANSWERS]) + more


def _expires(days: int | None) -> str:
    return "certificate expires within a day" if not days else f"certificate expires in {days} day{'s' * (days != 1)}"


def _seen(outcome: CheckOutcome) -> str:
    """What a healthy check saw, in a few words."""
    if outcome.kind == "tcp":
        return f"{outcome.target} accepts connections in {outcome.latency_ms} ms"
    if outcome.kind == "dns":
        return f"{outcome.target} resolves to {_answers(outcome)} in {outcome.latency_ms} ms"
    return f"HTTP {outcome.status_code} in {outcome.latency_ms} ms"


def _findings(service: str, outcome: CheckOutcome) -> list[dict[str, Any]]:
    if not outcome.healthy:
        title = f"{service} is down" if outcome.error_kind != "unsafe_target" else f"{service} not checked"
        severity = "warning" if outcome.error_kind == "unsafe_target" else "error"
        return [{"title": title, "detail": f"{outcome.target}: {outcome.error}", "severity": severity}]
    if outcome.status == "degraded":
        detail = f"{outcome.target}: the {_expires(outcome.tls_days_left)} (not after {outcome.tls_not_after})"
        return [{"title": f"{service}'s TLS certificate expires soon", "detail": detail, "severity": "warning"}]
    return []


def still_slow(input: AgentInput, outcome: CheckOutcome) -> str | None:
    """Why a passing check does not verify a slow spell's incident (its service's `degraded_incident` type): it
    answered slower than the service's degraded_latency_ms (empty: half its timeout). None: fast enough, or another
    kind of incident, for which a slow pass still verifies."""
    service = (input.context or {}).get("service") or {}
    spells = service.get("degraded_incident")
    if not spells or input.incident.incident_type != spells.get("incident_type") or outcome.latency_ms is None:
        return None
    threshold = float(service.get("degraded_latency_ms") or float(service.get("timeout_seconds") or 5) * 500)
    if outcome.latency_ms <= threshold:
        return None
    return f"answered in {outcome.latency_ms:g} ms, degraded above {threshold:g} ms"


def diagnose(check: dict[str, Any] | None) -> tuple[str, bool | None]:
    """A diagnosis of what a check (CheckOutcome.as_dict()) saw, and whether the service is healthy (None: unknown)."""
    if not check:
        return "no check data: no registered service and no service URL, so nothing could be observed", None
    kind, target = check.get("kind") or "http", check.get("target") or check.get("url")
    if check["healthy"]:
        if check.get("status") == "degraded":
            return f"the service answers, but its TLS {_expires(check.get('tls_days_left'))}: renew it", True
        if kind == "tcp":
            return f"{target} accepts connections; the problem may be transient or above TCP", True
        if kind == "dns":
            answers = ", ".join(check.get("answers") or [])
            return f"{target} resolves to {answers}; name resolution is not the problem", True
        return f"the service answers normally (HTTP {check['status_code']}); the problem may be transient", True
    error_kind = check["error_kind"]
    if error_kind == "http_status":
        code = check["status_code"]
        side = "server-side failure" if code >= 500 else "the endpoint rejects the request"
        diagnosis = f"the service is up but answers HTTP {code}: {side}"
        if check.get("body_excerpt"):
            diagnosis += f"; it says: {check['body_excerpt'].strip()[:200]}"
        return diagnosis, False
    template = KIND_DIAGNOSES.get((kind, error_kind)) or OTHER_DIAGNOSES.get(error_kind)
    if template is None:
        return DIAGNOSES.get(error_kind, check["error"]), False
    return template.format(target=target, error=check["error"], status_code=check.get("status_code")), False


class ChainAgents:
    """Agents as bound-method activities; the HTTP client is injected so tests and workers share one."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        check_timeout: float,
        runs: AgentRunLog | None = None,
        policy: OutboundPolicy | None = None,
    ) -> None:
        self._http = http
        self._timeout = check_timeout
        self._policy = policy or policy_of(http)  # for TCP checks; HTTP goes through the client's own guard
        self.runs = runs or AgentRunLog(None)

    async def _check(self, input: AgentInput) -> tuple[CheckOutcome | None, str]:
        """Run the step's check: params.check, else the registered service's, else a GET of the incident's
        service URL (None when there is none); and which of them it was."""
        service = (input.context or {}).get("service") or {}
        check, source = input.params.get("check"), "params"
        if not check and service.get("check"):
            check, source = service["check"], "service"
        if not check:
            if not input.incident.service_url:
                return None, "none"
            check, source = {"type": "http", "url": input.incident.service_url}, "incident"
        timeout = float(input.params.get("timeout_seconds") or service.get("timeout_seconds") or self._timeout)
        work = run_check(self._http, check, timeout=timeout, policy=self._policy)
        try:
            return await heartbeating(work, f"checking {check.get('type', 'http')}"), source
        except ValueError as err:
            # A check the playbook schema or the services API should have refused: no retry can fix it.
            raise ApplicationError(f"{input.step_id}: {err}", type="InvalidCheck", non_retryable=True) from None

    @activity.defn(name="monitor")
    @recorded("monitor")
    async def monitor(self, input: AgentInput) -> AgentResult:
        """Run the service's check (HTTP, TCP or DNS): up, degraded or down."""
        outcome, source = await self._check(input)
        service = input.incident.service
        if outcome is None:
            return clean(
                ok=False,
                summary=f"{service}: nothing to check (no registered service, no service URL)",
                data={"checked": False, "attempt": attempt()},
            )
        if outcome.status == "degraded":
            summary = f"{service} is DEGRADED: {_expires(outcome.tls_days_left)}"
        elif outcome.healthy:
            summary = f"{service} is up: {_seen(outcome)}"
        else:
            summary = f"{service} is DOWN: {outcome.error} ({outcome.target})"
        return clean(
            ok=outcome.healthy,
            summary=summary,
            data={"checked": True, "check": outcome.as_dict(), "source": source, "attempt": attempt()},
            findings=_findings(service, outcome),
        )

    @activity.defn(name="investigate")
    @recorded("investigate")
    async def investigate(self, input: AgentInput) -> AgentResult:
        """Summarise what monitor saw into a diagnosis."""
        seen: dict[str, Any] = (input.previous_agent_output or {}).get("data", {})
        check = seen.get("check")
        diagnosis, healthy = diagnose(check)
        return clean(
            ok=healthy is not False,
            summary=f"{input.incident.service}: {diagnosis}",
            data={"diagnosis": diagnosis, "healthy": healthy, "observed": check, "attempt": attempt()},
        )

    @activity.defn(name="remediate")
    @recorded("remediate")
    async def remediate(self, input: AgentInput) -> AgentResult:
        """Records that no remediation is configured; real actions arrive with the agents issue."""
        diagnosis = (input.previous_agent_output or {}).get("data", {}).get("diagnosis")
        return clean(
            ok=True,
            summary=f"no action: no remediation is configured for {input.incident.service}",
            data={"action": "none", "diagnosis": diagnosis, "attempt": attempt()},
        )

    @activity.defn(name="verify")
    @recorded("verify")
    async def verify(self, input: AgentInput) -> AgentResult:
        """Re-run monitor's check; a negative result fails the workflow."""
        outcome, source = await self._check(input)
        service = input.incident.service
        if outcome is None:
            return clean(
                ok=False,
                summary="cannot verify: no registered service and no service URL to check; resolve it by hand",
                data={"checked": False, "attempt": attempt()},
            )
        slow = still_slow(input, outcome)
        if not outcome.healthy:
            summary = f"verification failed: {service} still down ({outcome.error}; {outcome.target})"
        elif slow is not None:
            summary = f"verification failed: {service} still slow ({slow})"
        elif outcome.kind == "tcp":
            summary = f"verified: {service} accepts connections on {outcome.target}"
        elif outcome.kind == "dns":
            summary = f"verified: {outcome.target} resolves to {_answers(outcome)}"
        else:
            summary = f"verified: {service} answers HTTP {outcome.status_code}"
        if outcome.status == "degraded":
            summary += f", but its {_expires(outcome.tls_days_left)}"
        return clean(
            ok=outcome.healthy and slow is None,
            summary=summary,
            data={"checked": True, "check": outcome.as_dict(), "source": source, "attempt": attempt()},
            findings=_findings(service, outcome),
        )

    @activity.defn(name="noop")
    @recorded("noop")
    async def noop(self, input: AgentInput) -> AgentResult:
        """Nothing to do: ok, or params.ok; a placeholder or a join point."""
        ok = bool(input.params.get("ok", True))
        return clean(
            ok,
            str(input.params.get("summary", "nothing to do")),
            {"params": input.params, "attempt": attempt()},
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
        return clean(True, f"waited {seconds:g}s", {"seconds": seconds, "attempt": attempt()})

    def all(self) -> list[Any]:
        return [self.monitor, self.investigate, self.remediate, self.verify, self.noop, self.sleep]
