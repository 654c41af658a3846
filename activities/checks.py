"""The checks a monitor runs — HTTP(S) (activities/http_check.py), TCP connect, DNS resolve — each once, within a
timeout, as a CheckOutcome. No Temporal here: an agent runs them, and so can a scheduled monitoring loop.

TCP targets pass the same SSRF policy as HTTP (core.outbound): the host is resolved here, every address it
resolves to is checked, and a checked address is dialled, so a DNS answer that changes in between cannot slip
through. A DNS check only asks the resolver and connects nowhere, so the policy does not apply to it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from activities.http_check import CheckOutcome, check_http, policy_of
from core.outbound import OutboundPolicy, resolve

__all__ = [
    "CheckOutcome",
    "Dialled",
    "check_dns",
    "check_http",
    "check_tcp",
    "dial_checked",
    "policy_of",
    "run_check",
]

FAMILIES = {"A": socket.AF_INET, "AAAA": socket.AF_INET6}


@dataclass(frozen=True)
class Dialled:
    """How a connect went: the address that accepted, or why none did."""

    address: str | None = None
    error: str | None = None
    error_kind: str | None = None  # dns | unsafe_target | refused | transport


async def dial_checked(host: str, port: int, policy: OutboundPolicy) -> Dialled:
    """Resolve host, refuse if the policy refuses any of its addresses, else connect to them in turn (never to the
    name again) and hang up at once. No timeout of its own: callers bound it."""
    try:
        infos = await resolve(host, port)
    except socket.gaierror as err:
        return Dialled(error=f"DNS lookup failed: {err.strerror or err}", error_kind="dns")
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        if (reason := policy.refusal(ipaddress.ip_address(address))) is not None:
            where = host if host == address else f"{host} resolves to {address}, which"
            return Dialled(error=f"{where} {reason}", error_kind="unsafe_target")
    failed = Dialled(error=f"{host} resolves to no address", error_kind="dns")
    for address in addresses:
        try:
            _, writer = await asyncio.open_connection(address, port)
        except ConnectionRefusedError:
            failed = Dialled(error="connection refused", error_kind="refused")
            continue
        except OSError as err:
            failed = Dialled(error=f"cannot connect: {err.strerror or err}", error_kind="transport")
            continue
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass  # it accepted; how it hangs up does not matter
        return Dialled(address=address)
    return failed


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def check_tcp(host: str, port: int, *, timeout: float, policy: OutboundPolicy) -> CheckOutcome:
    """Connect to host:port once: up when it accepts within the timeout (resolving included)."""
    host = host.strip("[]")
    target = host_port(host, port)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            dialled = await dial_checked(host, port, policy)
    except TimeoutError:
        dialled = Dialled(error=f"no connection within {timeout:g}s", error_kind="timeout")
    healthy = dialled.address is not None
    return CheckOutcome(
        url=f"tcp://{target}",
        healthy=healthy,
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        error=dialled.error,
        error_kind=dialled.error_kind,
        kind="tcp",
        status="up" if healthy else "down",
        target=target,
        answers=[dialled.address] if dialled.address else None,
    )


def _same_address(answer: str, expected: str) -> bool:
    try:
        return ipaddress.ip_address(answer) == ipaddress.ip_address(expected)
    except ValueError:
        return answer == expected


async def check_dns(name: str, *, record_type: str = "A", expect: Iterable[str] = (), timeout: float) -> CheckOutcome:
    """Resolve the name (A: IPv4, AAAA: IPv6) through the system resolver: up when it answers within the timeout
    and, when `expect` is given, with at least one of those addresses."""
    if record_type not in FAMILIES:
        raise ValueError(f"record_type must be one of {', '.join(FAMILIES)}, got {record_type!r}")
    expected = list(expect)
    outcome = CheckOutcome(
        url=f"dns://{name}?type={record_type}", healthy=False, kind="dns", status="down", target=name
    )
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            infos = await resolve(name, None, family=FAMILIES[record_type])
    except socket.gaierror as err:
        outcome.error, outcome.error_kind = f"{name} does not resolve ({record_type}): {err.strerror or err}", "dns"
    except TimeoutError:
        outcome.error, outcome.error_kind = f"no DNS answer within {timeout:g}s", "timeout"
    else:
        outcome.answers = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not outcome.answers:
            outcome.error, outcome.error_kind = f"{name} has no {record_type} address", "dns"
        elif expected and not any(_same_address(a, e) for a in outcome.answers for e in expected):
            outcome.error = f"{name} resolves to {', '.join(outcome.answers)}, none of {', '.join(expected)}"
            outcome.error_kind = "unexpected_answer"
        else:
            outcome.healthy, outcome.status = True, "up"
    outcome.latency_ms = round((time.perf_counter() - started) * 1000, 1)
    return outcome


async def run_check(
    client: httpx.AsyncClient, check: dict[str, Any], *, timeout: float, policy: OutboundPolicy | None = None
) -> CheckOutcome:
    """Run a check given as a service defines it (core/services.py: {"type": "http" | "tcp" | "dns", …}).

    HTTP goes through `client` (its own SSRF guard applies); TCP uses `policy`, by default the client's. A check
    of another shape is a ValueError.
    """
    kind = check.get("type", "http")
    try:
        if kind == "http":
            url = str(check["url"])
            below, keyword = int(check.get("expect_status_below") or 400), check.get("keyword") or None
            tls_days = int(check.get("tls_expiry_days", 14))
        elif kind == "tcp":
            host, port = str(check["host"]), int(check["port"])
        elif kind == "dns":
            name, record_type = str(check["name"]), str(check.get("record_type") or "A")
            expect = [str(e) for e in check.get("expect") or ()]
        else:
            raise ValueError(f"unknown check type {kind!r} (http, tcp or dns)")
    except (KeyError, TypeError) as err:
        raise ValueError(f"a {kind} check needs {err}") from None
    if kind == "http":
        return await check_http(
            client, url, timeout=timeout, expect_status_below=below, keyword=keyword, tls_expiry_days=tls_days
        )
    if kind == "tcp":
        return await check_tcp(host, port, timeout=timeout, policy=policy or policy_of(client))
    return await check_dns(name, record_type=record_type, expect=expect, timeout=timeout)
