"""Outbound HTTP that cannot be pointed at cloud metadata, loopback or denied networks (the SSRF guard).

The guard sits where the socket is opened: our httpcore network backend resolves the host itself, refuses the
connection if any address it resolves to is blocked, and dials the checked address. So a DNS answer that changes
between a check and the connect (rebinding) cannot slip through, and every redirect hop, being a new connection,
is checked without the caller doing anything. TLS is unaffected: httpcore calls
`start_tls(server_hostname=<the URL's host>)` on the stream we return, so SNI and certificate checks use the name.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

from core.threads import Threads

if TYPE_CHECKING:
    from core.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_METADATA = "a link-local/cloud-metadata address"
# Refused under every configuration, with what they are.
_ALWAYS_REFUSED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), what)
    for net, what in (
        ("169.254.0.0/16", _METADATA),  # AWS, GCP, Azure, Oracle metadata at 169.254.169.254
        ("fe80::/10", _METADATA),
        ("fd00:ec2::254/128", _METADATA),  # AWS's IPv6 metadata: inside the private fc00::/7, so named here
        ("100.100.100.200/32", _METADATA),  # Alibaba Cloud's metadata, inside the shared 100.64.0.0/10
        ("224.0.0.0/4", "a multicast address"),
        ("ff00::/8", "a multicast address"),
        ("0.0.0.0/8", "an unspecified address"),  # Linux dials 0.0.0.0 as if it were 127.0.0.1
        ("::/128", "the unspecified address"),
        ("255.255.255.255/32", "the broadcast address"),
    )
)
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
# Numbers the resolver reads as IPv4 addresses too: 2852039166, 0xa9fea9fe, 0251.0376.0251.0376, 169.254.43518.
_LEGACY_IPV4 = re.compile(r"(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}", re.IGNORECASE)
_BYPASSES = ("transport", "mounts", "proxy")
_TRANSPORT_OPTIONS = ("verify", "http1", "http2", "limits")


class BlockedTarget(httpcore.ConnectError):
    """An outbound request the SSRF guard refuses; str() is one readable line.

    A ConnectError of httpcore so that httpx reports it like any failed connect (an httpx.ConnectError with this
    message, caused by this exception), and callers' `except httpx.HTTPError` keep handling it.
    """


@dataclass(frozen=True)
class OutboundPolicy:
    """Where outbound requests may go. Private ranges are allowed unless denied: internal services live there."""

    allow_loopback: bool = False
    deny_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        return cls(
            allow_loopback=settings.outbound_allow_loopback,
            deny_networks=tuple(ipaddress.ip_network(net, strict=False) for net in settings.outbound_deny_networks),
        )

    def refusal(self, address: IPAddress) -> str | None:
        """Why a connection to the address is refused ("is …: …"), or None when it is allowed."""
        forms: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            forms.append(address.ipv4_mapped)  # ::ffff:169.254.169.254 reaches 169.254.169.254
        for form in forms:
            for net, what in _ALWAYS_REFUSED:
                if form in net:
                    return f"is {what}: outbound requests there are refused"
            for net in self.deny_networks:
                if form in net:
                    return f"is in {net}, a denied network: refused (OUTBOUND_DENY_NETWORKS)"
            if not self.allow_loopback and any(form in net for net in _LOOPBACK):
                return "is loopback: refused (set OUTBOUND_ALLOW_LOOPBACK=true to allow)"
        return None


def _literal_address(host: str) -> IPAddress | None:
    """The address a host stands for without DNS, if it is one."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _refuse_any(host: str, addresses: Iterable[IPAddress], policy: OutboundPolicy) -> None:
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False  # a name, or a legacy number form: say what it resolved to
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            raise BlockedTarget(f"{host} {reason}" if literal else f"{host} resolves to {address}, which {reason}")


def check_url(url: str, policy: OutboundPolicy) -> None:
    """Refuse a URL early (input validation): not http(s), no host, or a literal address the policy refuses.

    Host names are not resolved here; the connect-time guard of the guarded clients checks what they resolve to.
    """
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError as err:
        raise BlockedTarget(f"not a valid URL ({err}): {url!r}") from None
    if parts.scheme not in ("http", "https"):
        raise BlockedTarget(f"only http:// and https:// URLs are allowed, got {url!r}")
    if not host:
        raise BlockedTarget(f"the URL has no host: {url!r}")
    check_host(host, policy)


def check_host(host: str, policy: OutboundPolicy) -> None:
    """Refuse a host early (input validation, as check_url does for a URL's): a literal address the policy refuses,
    or localhost while loopback is refused. Takes a name, an address, or an IPv6 address in brackets.

    Host names are not resolved here; the connect-time guard checks what they resolve to.
    """
    host = host.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()
    if not host:
        raise BlockedTarget("no host given")
    address = _literal_address(host)
    if address is not None:
        _refuse_any(host, [address], policy)
    elif not policy.allow_loopback and (host == "localhost" or host.endswith(".localhost")):
        raise BlockedTarget(f"{host} is loopback: refused (set OUTBOUND_ALLOW_LOOPBACK=true to allow)")


def blocked_reason(err: BaseException) -> str | None:
    """The guard's message if err, or anything in its cause/context chain or exception groups, is a BlockedTarget."""
    seen: set[int] = set()
    stack: list[BaseException] = [err]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BlockedTarget):
            return str(current)
        stack += [e for e in (current.__cause__, current.__context__) if e is not None]
        stack += list(getattr(current, "exceptions", ()))
    return None


def _vetted(host: str, infos: Iterable[tuple[Any, ...]], policy: OutboundPolicy) -> list[str]:
    """The distinct resolved addresses, in resolver order, once every one of them has passed the policy."""
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise httpcore.ConnectError(f"{host} resolves to no address")
    _refuse_any(host, (ipaddress.ip_address(address) for address in addresses), policy)
    return addresses


# Name lookups (getaddrinfo blocks) run on threads of their own, not on the event loop's default pool, where every
# database call of the process queues: a worker busy with an incident storm must not make the services it checks look
# slow or down (a check's time includes its lookup). An address is its own answer: no lookup, no thread.
RESOLVER_THREADS = Threads("resolve", 8)
_FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


async def resolve(host: str, port: int | None, *, family: int = 0) -> list[tuple[Any, ...]]:
    """`socket.getaddrinfo(host, port, family, SOCK_STREAM)` without blocking the event loop or waiting on its
    default pool. International names are encoded as IDNA 2008 (as anyio and httpx do)."""
    try:
        literal = None if "%" in host else ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and family in (0, _FAMILIES[literal.version]):
        sockaddr = (host, port or 0) if literal.version == 4 else (host, port or 0, 0, 0)
        return [(_FAMILIES[literal.version], socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]
    try:
        name: str | bytes = host.encode("ascii")
    except UnicodeEncodeError:
        import idna

        name = idna.encode(host, uts46=True)
    return await RESOLVER_THREADS.run(socket.getaddrinfo, name, port, family, socket.SOCK_STREAM)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


class GuardedAsyncBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address, then dials a checked address (see the module docstring)."""

    def __init__(self, policy: OutboundPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._policy = policy
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with anyio.fail_after(timeout):
                infos = await resolve(host, port)
        except TimeoutError as err:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout:g}s") from err
        except OSError as err:  # socket.gaierror: the name does not resolve
            raise httpcore.ConnectError(str(err)) from err
        last_error: httpcore.ConnectError | None = None
        for address in _vetted(host, infos, self._policy):
            try:
                return await self._inner.connect_tcp(
                    address, port, _remaining(deadline), local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as err:  # e.g. ::1 refused: try the next checked address
                last_error = err
        assert last_error is not None
        raise last_error

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedBackend(httpcore.NetworkBackend):
    """The synchronous GuardedAsyncBackend."""

    def __init__(self, policy: OutboundPolicy, inner: httpcore.NetworkBackend | None = None) -> None:
        self._policy = policy
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            raise httpcore.ConnectError(str(err)) from err
        last_error: httpcore.ConnectError | None = None
        for address in _vetted(host, infos, self._policy):
            try:
                return self._inner.connect_tcp(
                    address, port, _remaining(deadline), local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as err:
                last_error = err
        assert last_error is not None
        raise last_error

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _pool_options(
    verify: Any = True, http1: bool = True, http2: bool = False, limits: httpx.Limits | None = None
) -> dict[str, Any]:
    """httpcore pool keywords from the transport options of httpx.Client (whose defaults they keep)."""
    limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
    return {
        "ssl_context": httpx.create_ssl_context(verify=verify),
        "http1": http1,
        "http2": http2,
        "max_connections": limits.max_connections,
        "max_keepalive_connections": limits.max_keepalive_connections,
        "keepalive_expiry": limits.keepalive_expiry,
    }


def _expect_pool(transport: httpx.AsyncHTTPTransport | httpx.HTTPTransport, kind: type) -> None:
    if not isinstance(getattr(transport, "_pool", None), kind):  # fail closed if httpx's internals change
        raise RuntimeError("this httpx keeps no httpcore _pool: the SSRF guard cannot be installed")


# httpx's transports take no network backend, but do all the request, response and exception mapping around their
# httpcore pool: keep all that and swap in a pool that dials through the guard.
class _GuardedAsyncTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: OutboundPolicy, **options: Any) -> None:
        pool = _pool_options(**options)
        super().__init__(verify=pool["ssl_context"], trust_env=False)
        _expect_pool(self, httpcore.AsyncConnectionPool)
        self._pool = httpcore.AsyncConnectionPool(**pool, network_backend=GuardedAsyncBackend(policy))


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, policy: OutboundPolicy, **options: Any) -> None:
        pool = _pool_options(**options)
        super().__init__(verify=pool["ssl_context"], trust_env=False)
        _expect_pool(self, httpcore.ConnectionPool)
        self._pool = httpcore.ConnectionPool(**pool, network_backend=GuardedBackend(policy))


def _split_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the transport's options out of httpx.Client keywords; refuse those that would bypass the guard."""
    bypasses = [name for name in _BYPASSES if name in kwargs]
    if bypasses or kwargs.pop("trust_env", False):
        # trust_env would mount proxies from HTTP(S)_PROXY, which dial on our behalf, unguarded.
        raise TypeError(
            f"a guarded client cannot take {', '.join(bypasses) or 'trust_env=True'}: it bypasses the guard"
        )
    return {name: kwargs.pop(name) for name in _TRANSPORT_OPTIONS if name in kwargs}


class GuardedAsyncClient(httpx.AsyncClient):
    """An httpx.AsyncClient every connection of which (redirect hops included) passes the policy."""

    def __init__(self, policy: OutboundPolicy, **httpx_kwargs: Any) -> None:
        transport = _GuardedAsyncTransport(policy, **_split_options(httpx_kwargs))
        super().__init__(transport=transport, trust_env=False, **httpx_kwargs)
        self.outbound_policy = policy


class GuardedClient(httpx.Client):
    """The synchronous GuardedAsyncClient."""

    def __init__(self, policy: OutboundPolicy, **httpx_kwargs: Any) -> None:
        transport = _GuardedTransport(policy, **_split_options(httpx_kwargs))
        super().__init__(transport=transport, trust_env=False, **httpx_kwargs)
        self.outbound_policy = policy


def guarded_async_client(policy: OutboundPolicy, **httpx_kwargs: Any) -> httpx.AsyncClient:
    """An httpx.AsyncClient behind the SSRF guard (keywords as httpx's, except transport, mounts, proxy)."""
    return GuardedAsyncClient(policy, **httpx_kwargs)


def guarded_client(policy: OutboundPolicy, **httpx_kwargs: Any) -> httpx.Client:
    """An httpx.Client behind the SSRF guard (keywords as httpx's, except transport, mounts, proxy)."""
    return GuardedClient(policy, **httpx_kwargs)
