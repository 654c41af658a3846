"""One HTTP health check, guarded against requests to cloud metadata and other non-service addresses."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

# Never a monitored service: link-local (cloud metadata at 169.254.169.254), multicast, unspecified.
BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in ("169.254.0.0/16", "fe80::/10", "224.0.0.0/4", "ff00::/8", "0.0.0.0/32", "::/128")
)
BODY_EXCERPT = 300


class UnsafeTargetError(ValueError):
    """The URL points somewhere a health check must not go."""


@dataclass
class CheckOutcome:
    url: str
    healthy: bool
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    error_kind: str | None = None  # refused | timeout | dns | unsafe_target | http_status | transport
    body_excerpt: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def guard_target(url: str) -> None:
    """Refuse non-HTTP schemes and hosts resolving to blocked networks."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeTargetError(f"only absolute http(s) URLs can be checked, got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if any(address in net for net in BLOCKED_NETWORKS):
            raise UnsafeTargetError(f"{parts.hostname} resolves to {address}, a blocked address")


def _caused_by(err: BaseException, kind: type[BaseException]) -> bool:
    """Whether kind appears anywhere in err's cause/context chain or exception groups."""
    seen: set[int] = set()
    stack: list[BaseException] = [err]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return True
        stack += [e for e in (current.__cause__, current.__context__) if e is not None]
        stack += list(getattr(current, "exceptions", ()))
    return False


async def check_http(client: httpx.AsyncClient, url: str, *, timeout: float) -> CheckOutcome:
    """GET the URL once; healthy means a response below 400 within the timeout."""
    try:
        await guard_target(url)
    except UnsafeTargetError as err:
        return CheckOutcome(url=url, healthy=False, error=str(err), error_kind="unsafe_target")
    except OSError as err:
        return CheckOutcome(url=url, healthy=False, error=f"DNS lookup failed: {err}", error_kind="dns")
    started = time.perf_counter()
    try:
        response = await client.get(url, timeout=timeout, follow_redirects=False)
    except httpx.ConnectError as err:
        if _caused_by(err, ConnectionRefusedError):
            return CheckOutcome(url=url, healthy=False, error="connection refused", error_kind="refused")
        return CheckOutcome(url=url, healthy=False, error=f"cannot connect: {err}", error_kind="transport")
    except httpx.TimeoutException:
        return CheckOutcome(url=url, healthy=False, error=f"no answer within {timeout:g}s", error_kind="timeout")
    except httpx.HTTPError as err:
        return CheckOutcome(url=url, healthy=False, error=f"HTTP error: {err}", error_kind="transport")
    latency = round((time.perf_counter() - started) * 1000, 1)
    healthy = response.status_code < 400
    return CheckOutcome(
        url=url,
        healthy=healthy,
        status_code=response.status_code,
        latency_ms=latency,
        error=None if healthy else f"HTTP {response.status_code}",
        error_kind=None if healthy else "http_status",
        body_excerpt=response.text[:BODY_EXCERPT] if not healthy else None,
    )
