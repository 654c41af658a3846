"""One HTTP health check, guarded against requests to cloud metadata and other non-service addresses."""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from core.outbound import BlockedTarget, GuardedAsyncClient, OutboundPolicy, blocked_reason, check_url

BODY_EXCERPT = 300


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


def _unsafe_redirect(client: httpx.AsyncClient, response: httpx.Response) -> str | None:
    """Why the redirect's target is refused, if it is: a redirect is the answer, but not a healthy one then."""
    if not response.has_redirect_location:
        return None
    # A client that is not guarded: at least what no configuration allows.
    policy = client.outbound_policy if isinstance(client, GuardedAsyncClient) else OutboundPolicy(allow_loopback=True)
    try:
        target = str(response.url.join(response.headers["Location"]))
        check_url(target, policy)
    except httpx.InvalidURL:
        return None
    except BlockedTarget as err:
        return f"redirects to {target}: {err}"
    return None


async def check_http(client: httpx.AsyncClient, url: str, *, timeout: float) -> CheckOutcome:
    """GET the URL once; healthy means a response below 400 within the timeout.

    The client must be one of core.outbound's guarded clients (the worker's is): its connections refuse
    metadata, loopback and denied addresses, which this reports as error_kind "unsafe_target".
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        error = f"only absolute http(s) URLs can be checked, got {url!r}"
        return CheckOutcome(url=url, healthy=False, error=error, error_kind="unsafe_target")
    started = time.perf_counter()
    try:
        response = await client.get(url, timeout=timeout, follow_redirects=False)
    except httpx.ConnectError as err:
        if (reason := blocked_reason(err)) is not None:
            return CheckOutcome(url=url, healthy=False, error=reason, error_kind="unsafe_target")
        if _caused_by(err, socket.gaierror):
            return CheckOutcome(url=url, healthy=False, error=f"DNS lookup failed: {err}", error_kind="dns")
        if _caused_by(err, ConnectionRefusedError):
            return CheckOutcome(url=url, healthy=False, error="connection refused", error_kind="refused")
        return CheckOutcome(url=url, healthy=False, error=f"cannot connect: {err}", error_kind="transport")
    except httpx.TimeoutException:
        return CheckOutcome(url=url, healthy=False, error=f"no answer within {timeout:g}s", error_kind="timeout")
    except httpx.HTTPError as err:
        return CheckOutcome(url=url, healthy=False, error=f"HTTP error: {err}", error_kind="transport")
    latency = round((time.perf_counter() - started) * 1000, 1)
    if (reason := _unsafe_redirect(client, response)) is not None:
        return CheckOutcome(
            url=url,
            healthy=False,
            status_code=response.status_code,
            latency_ms=latency,
            error=reason,
            error_kind="unsafe_target",
        )
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
