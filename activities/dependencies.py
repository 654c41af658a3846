"""investigate_dependencies: checks a service's declared dependencies at once and names the broken ones.

An HTTP dependency is a GET through the worker's guarded client (healthy below 400); a TCP one is a connect
that passes the same SSRF policy (activities/checks.py's dial_checked: resolve, check every address, dial a
checked one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, ClassVar

from activities.base import AgentDeps, agent_result
from activities.checks import dial_checked
from activities.heartbeat import beat
from activities.http_check import check_http
from core.agents import AgentSpec, object_schema
from core.outbound import BlockedTarget, OutboundPolicy, check_url
from core.payloads import AgentInput, AgentResult

PORT = r"(?:[1-9]\d{0,3}|[1-5]\d{4}|6[0-4]\d{3}|65[0-4]\d{2}|655[0-2]\d|6553[0-5])"
DEPENDENCY = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "url": {"type": "string", "pattern": r"^https?://\S+$", "maxLength": 2000},
        "tcp": {"type": "string", "pattern": rf"^(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):{PORT}$", "maxLength": 300},
    },
    "required": ["name"],
    "additionalProperties": False,
    "oneOf": [{"required": ["url"]}, {"required": ["tcp"]}],  # exactly one of them
}
DEPENDENCIES_SCHEMA = object_schema(
    {
        "dependencies": {"type": "array", "minItems": 1, "maxItems": 50, "items": DEPENDENCY},
        "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 60, "default": 5},
    },
)
SHOWN_IN_SUMMARY = 5


def declared_by_service(service: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The registered service's `dependencies` as this agent's entries, from each one's own registered check (the
    context's `service.dependency_checks`), and the names it cannot check (a DNS check, or not registered)."""
    checks: dict[str, Any] = service.get("dependency_checks") or {}
    entries, unchecked = [], []
    for name in service.get("dependencies") or []:
        check = checks.get(name) or {}
        if check.get("type", "http") == "http" and check.get("url"):
            entries.append({"name": name, "url": check["url"]})
        elif check.get("type") == "tcp":
            host = str(check["host"])
            entries.append(
                {"name": name, "tcp": f"[{host}]:{check['port']}" if ":" in host else f"{host}:{check['port']}"}
            )
        else:
            unchecked.append(name)
    return entries, unchecked


def split_target(target: str) -> tuple[str, int]:
    """Host and port of "db:5432" or "[::1]:5432" (the schema has checked the shape)."""
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


class InvestigateDependenciesAgent:
    spec: ClassVar[AgentSpec] = AgentSpec(
        name="investigate_dependencies",
        version="1.0.0",
        simulation="read",  # it only reads: a dry run runs it for real
        description="Checks a service's declared dependencies concurrently (HTTP GET or TCP connect, "
        "each within a timeout) and names the broken ones",
        capabilities=("investigation",),
        params_schema=DEPENDENCIES_SCHEMA,
        default_risk="low",
    )

    def __init__(self, deps: AgentDeps) -> None:
        self._deps = deps

    async def run(self, input: AgentInput) -> AgentResult:
        declared: list[dict[str, Any]] = input.params.get("dependencies") or []
        unchecked: list[str] = []
        if not declared:  # the registered service's dependencies (POST /api/services), each by its own check
            declared, unchecked = declared_by_service((input.context or {}).get("service") or {})
        if not declared:
            why = f" ({', '.join(unchecked)} cannot be checked: DNS check or not registered)" if unchecked else ""
            # Nothing declared is not a broken dependency: a neutral answer, not a negative finding.
            return agent_result(
                True,
                "no dependencies to check: give params.dependencies or register the service's dependencies" + why,
                data={"configured": False, "dependencies": [], "broken": [], "unchecked": unchecked},
                resolved=None,
            )
        timeout = float(input.params.get("timeout_seconds", 5))
        policy = OutboundPolicy.from_settings(self._deps.settings)
        started = time.perf_counter()
        checked = await _all_heartbeating([self._check(dep, timeout, policy) for dep in declared])
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        broken = [c for c in checked if not c["healthy"]]
        findings = [
            {
                "title": f"{c['name']} is broken" if c["error_kind"] != "unsafe_target" else f"{c['name']} not checked",
                "detail": f"{c['kind'].upper()} {c['target']}: {c['error']}",
                "severity": "warning" if c["error_kind"] == "unsafe_target" else "error",
            }
            for c in broken
        ]
        if broken:
            named = ", ".join(f"{c['name']} ({c['error']})" for c in broken[:SHOWN_IN_SUMMARY])
            more = f" and {len(broken) - SHOWN_IN_SUMMARY} more" if len(broken) > SHOWN_IN_SUMMARY else ""
            noun = "dependency" if len(checked) == 1 else "dependencies"
            summary = f"{len(broken)} of {len(checked)} {noun} broken: {named}{more}"
        else:
            slowest = max(checked, key=lambda c: c["latency_ms"] or 0)
            noun = "the dependency is" if len(checked) == 1 else f"all {len(checked)} dependencies are"
            summary = f"{noun} healthy (slowest: {slowest['name']}, {slowest['latency_ms']} ms)"
        return agent_result(
            not broken,
            summary,
            data={
                "dependencies": checked,
                "broken": [c["name"] for c in broken],
                "unchecked": unchecked,
                "timeout_seconds": timeout,
                "elapsed_ms": elapsed,
            },
            findings=findings,
            # Healthy dependencies do not say the incident is over, only where the problem is not.
            resolved=None,
        )

    async def _check(self, dep: dict[str, Any], timeout: float, policy: OutboundPolicy) -> dict[str, Any]:
        kind, target = ("http", dep["url"]) if "url" in dep else ("tcp", dep["tcp"])
        status: int | None = None
        started = time.perf_counter()
        try:
            # One deadline for everything (resolve, connect, answer): httpx's timeout is per phase.
            async with asyncio.timeout(timeout):
                if kind == "http":
                    check_url(target, policy)  # early, for literal addresses; the guarded client checks names
                    outcome = await check_http(self._deps.http, target, timeout=timeout)
                    error, error_kind, status = outcome.error, outcome.error_kind, outcome.status_code
                else:
                    dialled = await dial_checked(*split_target(target), policy)
                    error, error_kind = dialled.error, dialled.error_kind
        except BlockedTarget as err:
            error, error_kind = str(err), "unsafe_target"
        except TimeoutError:
            error, error_kind = f"no answer within {timeout:g}s", "timeout"
        latency = round((time.perf_counter() - started) * 1000, 1)
        return {
            "name": dep["name"],
            "kind": kind,
            "target": target,
            "healthy": error is None,
            "latency_ms": latency,
            "error": error,
            "error_kind": error_kind,
            "status_code": status,
        }


async def _all_heartbeating(checks: list[Awaitable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run the checks concurrently, heartbeating each second; cancelling the activity cancels them all."""
    tasks = [asyncio.ensure_future(check) for check in checks]
    try:
        pending: set[asyncio.Future[dict[str, Any]]] = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=1.0)
            beat(f"{len(tasks) - len(pending)} of {len(tasks)} dependencies checked")
    finally:
        for task in tasks:
            task.cancel()
    return [task.result() for task in tasks]
