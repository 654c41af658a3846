"""One HTTP(S) health check, guarded against requests to cloud metadata and other non-service addresses: status,
latency, a keyword in the body and, for https, the certificate's expiry. `CheckOutcome` is every check's result
(HTTP here, TCP and DNS in activities/checks.py)."""

from __future__ import annotations

import math
import socket
import ssl
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from core.outbound import BlockedTarget, GuardedAsyncClient, OutboundPolicy, blocked_reason, check_url
from core.redact import redact_text

BODY_EXCERPT = 300
BODY_SCANNED = 1024 * 1024  # a keyword is looked for in the first MiB of the body, and no more is read
DAY = 86_400
E = TypeVar("E", bound=BaseException)


@dataclass
class CheckOutcome:
    url: str  # the HTTP check's URL; tcp://host:port or dns://name?type=A for the others
    healthy: bool  # up or degraded
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    # refused | timeout | dns | unsafe_target | http_status | transport | keyword | tls | unexpected_answer
    error_kind: str | None = None
    body_excerpt: str | None = None
    kind: str | None = None  # http | tcp | dns
    status: str | None = None  # up | degraded | down
    target: str | None = None  # what was checked, as a human names it: the URL, host:port, the DNS name
    answers: list[str] | None = None  # DNS: the addresses; TCP: the address connected to
    keyword_found: bool | None = None  # None: no keyword asked for
    tls_days_left: int | None = None  # whole days until the certificate expires (https only)
    tls_not_after: str | None = None  # its notAfter, ISO 8601 UTC

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cause(err: BaseException, kind: type[E]) -> E | None:
    """The first exception of `kind` in err's cause/context chain or exception groups, if any."""
    seen: set[int] = set()
    stack: list[BaseException] = [err]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        stack += [e for e in (current.__cause__, current.__context__) if e is not None]
        stack += list(getattr(current, "exceptions", ()))
    return None


def policy_of(client: httpx.AsyncClient) -> OutboundPolicy:
    """The client's SSRF policy; for a client that is not guarded, at least what no configuration allows."""
    return client.outbound_policy if isinstance(client, GuardedAsyncClient) else OutboundPolicy(allow_loopback=True)


def _unsafe_redirect(client: httpx.AsyncClient, response: httpx.Response) -> str | None:
    """Why the redirect's target is refused, if it is: a redirect is the answer, but not a healthy one then."""
    if not response.has_redirect_location:
        return None
    try:
        target = str(response.url.join(response.headers["Location"]))
        check_url(target, policy_of(client))
    except httpx.InvalidURL:
        return None
    except BlockedTarget as err:
        return f"redirects to {target}: {err}"
    return None


def _certificate_expiry(response: httpx.Response) -> float | None:
    """The peer certificate's notAfter (epoch seconds) for an https response, while its connection is open.

    httpcore hands the connection's stream to httpx as the `network_stream` extension; its ssl_object is the
    verified session. With verification off, getpeercert() is empty and the expiry is unknown (None).
    """
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if ssl_object is None:
        return None
    not_after = (ssl_object.getpeercert() or {}).get("notAfter")
    return float(ssl.cert_time_to_seconds(not_after)) if not_after else None


async def _read_bounded(response: httpx.Response) -> tuple[str, bool]:
    """The first BODY_SCANNED bytes of the body, decoded, and whether there was more (not downloaded)."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > BODY_SCANNED:
            break
    text = bytes(body[:BODY_SCANNED]).decode(response.encoding or "utf-8", errors="replace")
    return text, len(body) > BODY_SCANNED


def _connect_failure(url: str, err: httpx.ConnectError) -> CheckOutcome:
    def down(error: str, kind: str) -> CheckOutcome:
        return CheckOutcome(url=url, healthy=False, error=error, error_kind=kind)

    if (reason := blocked_reason(err)) is not None:
        return down(reason, "unsafe_target")
    if _cause(err, socket.gaierror) is not None:
        return down(f"DNS lookup failed: {err}", "dns")
    if _cause(err, ConnectionRefusedError) is not None:
        return down("connection refused", "refused")
    if (invalid := _cause(err, ssl.SSLCertVerificationError)) is not None:
        return down(f"TLS certificate rejected: {invalid.verify_message or invalid.reason}", "tls")
    if (tls := _cause(err, ssl.SSLError)) is not None:
        return down(f"TLS handshake failed: {tls.reason or tls}", "tls")
    return down(f"cannot connect: {err}", "transport")


async def check_http(
    client: httpx.AsyncClient,
    url: str,
    *,
    timeout: float,
    expect_status_below: int = 400,
    keyword: str | None = None,
    tls_expiry_days: int = 14,
) -> CheckOutcome:
    """GET the URL once: up when it answers below `expect_status_below` within the timeout, its body (first MiB)
    contains `keyword` and, for https, its certificate is valid; degraded when that certificate expires within
    `tls_expiry_days`.

    The client must be one of core.outbound's guarded clients (the worker's is): its connections refuse
    metadata, loopback and denied addresses, which this reports as error_kind "unsafe_target".
    """
    outcome = await _get(client, url, timeout, expect_status_below, keyword, tls_expiry_days)
    outcome.kind, outcome.target = "http", url
    if outcome.status is None:
        outcome.status = "up" if outcome.healthy else "down"
    return outcome


async def _get(  # noqa: C901 (one request's outcomes (status, redirect, TLS, timeout, refusal) in one place)
    client: httpx.AsyncClient, url: str, timeout: float, below: int, keyword: str | None, tls_days: int
) -> CheckOutcome:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        error = f"only absolute http(s) URLs can be checked, got {url!r}"
        return CheckOutcome(url=url, healthy=False, error=error, error_kind="unsafe_target")
    started = time.perf_counter()
    try:
        async with client.stream("GET", url, timeout=timeout, follow_redirects=False) as response:
            expires = _certificate_expiry(response)  # read while the connection is surely open
            text, cut = await _read_bounded(response)
    except httpx.ConnectError as err:
        return _connect_failure(url, err)
    except httpx.TimeoutException:
        return CheckOutcome(url=url, healthy=False, error=f"no answer within {timeout:g}s", error_kind="timeout")
    except httpx.HTTPError as err:
        return CheckOutcome(url=url, healthy=False, error=f"HTTP error: {err}", error_kind="transport")
    outcome = CheckOutcome(
        url=url,
        healthy=True,
        status_code=response.status_code,
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        keyword_found=None if keyword is None else keyword in text,
    )
    seconds_left = None if expires is None else expires - time.time()
    if expires is not None and seconds_left is not None:
        outcome.tls_days_left = math.floor(seconds_left / DAY)
        outcome.tls_not_after = datetime.fromtimestamp(expires, UTC).isoformat()
    failure: tuple[str, str] | None = None
    if (reason := _unsafe_redirect(client, response)) is not None:
        failure = (reason, "unsafe_target")
    elif response.status_code >= below:
        failure = (f"HTTP {response.status_code}", "http_status")
    elif outcome.keyword_found is False:
        scanned = " (in its first MiB)" if cut else ""
        failure = (f"HTTP {response.status_code} but the body lacks {keyword!r}{scanned}", "keyword")
    elif seconds_left is not None and seconds_left <= 0:  # expired since the handshake verified it
        failure = (f"the TLS certificate expired on {outcome.tls_not_after}", "tls")
    if failure is not None:
        outcome.healthy, outcome.status, (outcome.error, outcome.error_kind) = False, "down", failure
        if failure[1] in ("http_status", "keyword"):
            # Redacted before it is cut: the monitor stores it, and the chain quotes part of it in a summary.
            outcome.body_excerpt = redact_text(text, BODY_EXCERPT)
    elif seconds_left is not None and seconds_left < tls_days * DAY:
        outcome.status = "degraded"  # still healthy: error stays None, tls_days_left says why
    return outcome
