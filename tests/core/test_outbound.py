"""The SSRF guard: refused at connect time (every redirect hop too), against real local servers."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from activities.http_check import check_http
from core.outbound import (
    BlockedTarget,
    OutboundPolicy,
    blocked_reason,
    check_host,
    check_url,
    guarded_async_client,
    guarded_client,
    resolve,
)
from core.settings import Settings, SettingsError, load_settings
from tests.peers import serving

METADATA = "http://169.254.169.254/latest/meta-data/"
METADATA_REFUSED = "169.254.169.254 is a link-local/cloud-metadata address: outbound requests there are refused"
LOOPBACK = OutboundPolicy(allow_loopback=True)


def recording_handler(paths: list[str], *, redirect_to: str | None = None) -> type[BaseHTTPRequestHandler]:
    """Answers 200 "ok" (or 302 to redirect_to), noting each request's path."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            paths.append(self.path)
            self.send_response(302 if redirect_to else 200)
            if redirect_to:
                self.send_header("Location", redirect_to)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def recording_server(*, redirect_to: str | None = None) -> Iterator[tuple[str, list[str]]]:
    paths: list[str] = []
    with serving(recording_handler(paths, redirect_to=redirect_to)) as base:
        yield base, paths


async def test_metadata_is_refused_at_once_without_a_connection():
    started = time.perf_counter()
    async with guarded_async_client(LOOPBACK, timeout=10) as client:
        with pytest.raises(httpx.ConnectError) as err:
            await client.get(METADATA)
    # Refused before dialing: nothing listens there, so a dial would end in a timeout, not this.
    assert time.perf_counter() - started < 1
    assert isinstance(err.value.__cause__, BlockedTarget)
    assert str(err.value) == METADATA_REFUSED
    assert blocked_reason(err.value) == METADATA_REFUSED


async def test_a_redirect_to_metadata_is_refused_on_the_second_hop():
    with recording_server(redirect_to=METADATA) as (base, paths):
        async with guarded_async_client(LOOPBACK, follow_redirects=True, timeout=10) as client:
            with pytest.raises(httpx.ConnectError) as err:
                await client.get(f"{base}/start")
    assert paths == ["/start"]
    assert blocked_reason(err.value) == METADATA_REFUSED
    assert str(err.value.request.url) == METADATA


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "2130706433"])
async def test_loopback_is_refused_by_default(host):
    with recording_server() as (base, paths):
        port = base.rsplit(":", 1)[1]
        async with guarded_async_client(OutboundPolicy(), timeout=5) as client:
            with pytest.raises(httpx.ConnectError) as err:
                await client.get(f"http://{host}:{port}/")
    assert paths == []
    reason = blocked_reason(err.value)
    assert reason is not None and reason.endswith("is loopback: refused (set OUTBOUND_ALLOW_LOOPBACK=true to allow)")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_is_allowed_when_configured(host):
    with recording_server() as (base, paths):
        async with guarded_async_client(LOOPBACK, timeout=5) as client:
            response = await client.get(base.replace("127.0.0.1", host) + "/up")
    assert (response.status_code, response.text, paths) == (200, "ok", ["/up"])


async def test_a_denied_network_is_refused_even_with_loopback_allowed():
    policy = OutboundPolicy(allow_loopback=True, deny_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    with recording_server() as (base, paths):
        async with guarded_async_client(policy, timeout=5) as client:
            with pytest.raises(httpx.ConnectError) as err:
                await client.get(base)
    assert paths == []
    assert (
        blocked_reason(err.value) == "127.0.0.1 is in 127.0.0.0/8, a denied network: refused (OUTBOUND_DENY_NETWORKS)"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254 is a link-local/cloud-metadata address"),
        ("http://2852039166/", "2852039166 resolves to 169.254.169.254, which is a link-local/cloud-metadata address"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254 is a link-local/cloud-metadata address"),
        ("http://0.0.0.0:80/", "0.0.0.0 is an unspecified address"),
    ],
)
async def test_other_forms_of_blocked_addresses_are_refused(url, message):
    async with guarded_async_client(LOOPBACK, timeout=5) as client:
        with pytest.raises(httpx.ConnectError) as err:
            await client.get(url)
    assert (blocked_reason(err.value) or "").startswith(message)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/file", "only http:// and https:// URLs are allowed"),
        ("file:///etc/passwd", "only http:// and https:// URLs are allowed"),
        ("http:///path", "the URL has no host"),
        ("/relative/path", "only http:// and https:// URLs are allowed"),
        ("http://169.254.169.254/latest/meta-data/", METADATA_REFUSED),
        ("http://[::ffff:a9fe:a9fe]/", "::ffff:a9fe:a9fe is a link-local/cloud-metadata address"),
        ("https://0xa9fea9fe/", "0xa9fea9fe resolves to 169.254.169.254, which is a link-local"),
        ("http://127.0.0.1:8080/", "127.0.0.1 is loopback: refused"),
        ("http://localhost/", "localhost is loopback: refused"),
    ],
)
def test_check_url_refuses(url, message):
    with pytest.raises(BlockedTarget) as err:
        check_url(url, OutboundPolicy())
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_check_url_accepts_names_without_resolving_and_private_ranges_unless_denied():
    check_url("https://service.invalid/health", OutboundPolicy())  # .invalid never resolves: it was not looked up
    check_url("http://10.1.2.3:8080/health", OutboundPolicy())
    check_url("http://127.0.0.1/", LOOPBACK)
    denied = OutboundPolicy(deny_networks=(ipaddress.ip_network("10.0.0.0/8"),))
    with pytest.raises(BlockedTarget, match=r"10\.1\.2\.3 is in 10\.0\.0\.0/8, a denied network"):
        check_url("http://10.1.2.3:8080/health", denied)


@pytest.mark.parametrize(
    ("host", "policy", "message"),
    [
        ("169.254.169.254", LOOPBACK, METADATA_REFUSED),
        ("[fd00:ec2::254]", LOOPBACK, "fd00:ec2::254 is a link-local/cloud-metadata address"),
        ("2852039166", LOOPBACK, "2852039166 resolves to 169.254.169.254, which is a link-local"),
        ("127.0.0.1", OutboundPolicy(), "127.0.0.1 is loopback: refused"),
        ("[::1]", OutboundPolicy(), "::1 is loopback: refused"),
        ("LocalHost.", OutboundPolicy(), "localhost is loopback: refused"),
        ("db.localhost", OutboundPolicy(), "db.localhost is loopback: refused"),
        ("10.1.2.3", OutboundPolicy(deny_networks=(ipaddress.ip_network("10.0.0.0/8"),)), "10.1.2.3 is in 10.0.0.0/8"),
    ],
)
def test_check_host_refuses_what_check_url_refuses_in_a_url(host, policy, message):
    """A TCP check's host: the same write-time rules as a URL's host (names are not resolved)."""
    with pytest.raises(BlockedTarget) as err:
        check_host(host, policy)
    assert str(err.value).startswith(message)


def test_check_host_accepts_names_private_addresses_and_allowed_loopback():
    for host in ("db.invalid", "10.1.2.3", "[fd12::1]"):
        check_host(host, OutboundPolicy())
    for host in ("127.0.0.1", "[::1]", "localhost"):
        check_host(host, LOOPBACK)


async def test_check_http_reports_metadata_and_a_redirect_to_it_as_unsafe_targets():
    async with guarded_async_client(LOOPBACK) as client:
        direct = await check_http(client, METADATA, timeout=5)
        with recording_server(redirect_to=METADATA) as (base, paths):
            redirected = await check_http(client, f"{base}/health", timeout=5)
        with recording_server(redirect_to="/login") as (base, _):
            relative = await check_http(client, f"{base}/health", timeout=5)
    assert (direct.healthy, direct.error_kind, direct.error) == (False, "unsafe_target", METADATA_REFUSED)
    assert (redirected.healthy, redirected.error_kind, redirected.status_code) == (False, "unsafe_target", 302)
    assert redirected.error == f"redirects to {METADATA}: {METADATA_REFUSED}"
    assert paths == ["/health"]  # a health check does not follow redirects
    assert (relative.healthy, relative.status_code, relative.error_kind) == (True, 302, None)


async def test_check_http_refuses_loopback_unless_allowed():
    with recording_server() as (base, paths):
        async with guarded_async_client(OutboundPolicy()) as client:
            refused = await check_http(client, f"{base}/health", timeout=5)
        async with guarded_async_client(LOOPBACK) as client:
            allowed = await check_http(client, f"{base}/health", timeout=5)
    assert (refused.healthy, refused.error_kind) == (False, "unsafe_target")
    assert (allowed.healthy, allowed.status_code) == (True, 200)
    assert paths == ["/health"]


def test_the_sync_client_is_guarded_the_same_way():
    with recording_server(redirect_to=METADATA) as (redirecting, hops), recording_server() as (base, paths):
        with guarded_client(LOOPBACK, follow_redirects=True, timeout=5) as client:
            assert client.get(f"{base}/up").text == "ok"
            with pytest.raises(httpx.ConnectError) as direct:
                client.get(METADATA)
            with pytest.raises(httpx.ConnectError) as redirected:
                client.get(f"{redirecting}/start")
        with guarded_client(OutboundPolicy(), timeout=5) as client, pytest.raises(httpx.ConnectError) as loopback:
            client.get(f"{base}/again")
    assert blocked_reason(direct.value) == blocked_reason(redirected.value) == METADATA_REFUSED
    assert "is loopback: refused" in (blocked_reason(loopback.value) or "")
    assert (paths, hops) == (["/up"], ["/start"])


@contextmanager
def tls_server(tmp_path: Path) -> Iterator[tuple[int, ssl.SSLContext, list[str | None]]]:
    """HTTPS on 127.0.0.1 with a certificate for the name "localhost" only; yields port, a context trusting it, and
    the SNI names clients sent."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost"
    subprocess.run(
        ["openssl", *request.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    names: list[str | None] = []

    def note_sni(sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        names.append(name)

    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server_context.sni_callback = note_sni
    server = ThreadingHTTPServer(("127.0.0.1", 0), recording_handler([]))
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], ssl.create_default_context(cafile=cert), names
    finally:
        server.shutdown()
        server.server_close()


async def test_https_still_verifies_the_name_though_the_checked_address_is_dialed(tmp_path):
    with tls_server(tmp_path) as (port, trusted, names):
        async with guarded_async_client(LOOPBACK, verify=trusted, timeout=10) as client:
            response = await client.get(f"https://localhost:{port}/")
            # The certificate names only "localhost": verification is against the URL's host, not what we dialed.
            with pytest.raises(httpx.ConnectError, match="IP address mismatch|certificate verify failed"):
                await client.get(f"https://127.0.0.1:{port}/")
    assert response.status_code == 200
    assert names[0] == "localhost"


async def test_options_that_would_bypass_the_guard_are_refused():
    for bypass in ({"proxy": "http://127.0.0.1:3128"}, {"trust_env": True}, {"transport": httpx.AsyncHTTPTransport()}):
        with pytest.raises(TypeError, match="bypasses the guard"):
            guarded_async_client(LOOPBACK, **bypass)


def test_deny_networks_read_from_the_environment_as_json_or_comma_separated(tmp_path):
    env = tmp_path / ".env"
    env.write_text("OUTBOUND_DENY_NETWORKS=10.0.0.0/8, 192.168.1.7/16,fd00::/8\nOUTBOUND_ALLOW_LOOPBACK=true\n")
    settings = Settings(_env_file=env)  # type: ignore[call-arg]
    assert settings.outbound_deny_networks == ["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"]
    policy = OutboundPolicy.from_settings(settings)
    assert policy.allow_loopback and [str(net) for net in policy.deny_networks] == settings.outbound_deny_networks
    env.write_text('OUTBOUND_DENY_NETWORKS=["172.16.0.0/12"]\n')
    assert Settings(_env_file=env).outbound_deny_networks == ["172.16.0.0/12"]  # type: ignore[call-arg]
    assert Settings(_env_file=None).outbound_deny_networks == []  # type: ignore[call-arg]
    assert OutboundPolicy.from_settings(Settings(_env_file=None)) == OutboundPolicy()  # type: ignore[call-arg]


@pytest.mark.parametrize("value", ["10.0.0.0/33", "10.0.0.0/8,not-a-network", "[10"])
def test_a_bad_deny_network_is_one_line_naming_the_variable(tmp_path, value):
    env = tmp_path / ".env"
    env.write_text(f"OUTBOUND_DENY_NETWORKS={value}\n")
    with pytest.raises(SettingsError) as err:
        load_settings(_env_file=env)
    assert str(err.value).startswith("invalid configuration: OUTBOUND_DENY_NETWORKS: ")
    assert "\n" not in str(err.value)


async def test_lookups_do_not_wait_behind_the_event_loops_busy_threads() -> None:
    """Every blocking database call of a worker queues on the event loop's default threads; a check's name lookup
    (part of its measured time) does not wait behind them, and an address needs no lookup at all."""
    loop = asyncio.get_running_loop()
    release = threading.Event()
    held = [loop.run_in_executor(None, release.wait) for _ in range(64)]  # every default thread, and a queue behind
    try:
        named = await asyncio.wait_for(resolve("localhost", 8080), 10)
        assert {info[4][0] for info in named} & {"127.0.0.1", "::1"} and {info[4][1] for info in named} == {8080}
        assert await asyncio.wait_for(resolve("10.1.2.3", 443), 10) == [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("10.1.2.3", 443))
        ]
        [(family, _, _, _, sockaddr)] = await asyncio.wait_for(resolve("::1", 80), 10)
        assert (family, sockaddr[:2]) == (socket.AF_INET6, ("::1", 80))
        with pytest.raises(socket.gaierror):  # an IPv4 address has no IPv6 answer: asked of the resolver, as before
            await asyncio.wait_for(resolve("10.1.2.3", None, family=socket.AF_INET6), 10)
    finally:
        release.set()
        await asyncio.gather(*held)
