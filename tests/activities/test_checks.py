"""The monitor's checks on real peers: HTTP servers (an HTTPS one with certificates made here by openssl), TCP
sockets and the system resolver; the SSRF policy refuses before anything is dialled."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time

import httpx
import pytest

from activities.checks import check_dns, check_http, check_tcp, run_check
from activities.http_check import BODY_EXCERPT
from core.outbound import OutboundPolicy, guarded_async_client
from tests.peers import free_port, http_service
from tests.peers_tls import Certificates, https_service, listening, make_certificates, trusting
from tests.secret_shapes import shown

LOOPBACK = OutboundPolicy(allow_loopback=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


async def test_http_keyword_present_is_up_and_absent_is_down_with_the_body_shown():
    with http_service() as (url, state):
        state.body = b"status: all systems go"
        async with guarded_async_client(LOOPBACK) as http:
            found = await check_http(http, url, timeout=5, keyword="all systems go")
            missing = await check_http(http, url, timeout=5, keyword="checkout-ready")
            plain = await check_http(http, url, timeout=5)
    assert (found.status, found.healthy, found.keyword_found, found.kind, found.target) == (
        "up",
        True,
        True,
        "http",
        url,
    )
    assert found.error is None and found.body_excerpt is None and found.tls_days_left is None
    assert (missing.status, missing.healthy, missing.error_kind, missing.keyword_found) == (
        "down",
        False,
        "keyword",
        False,
    )
    assert missing.status_code == 200 and "'checkout-ready'" in missing.error
    assert missing.body_excerpt == "status: all systems go"
    assert plain.keyword_found is None and plain.status == "up"


async def test_the_body_excerpt_is_redacted_before_it_is_cut():
    """An error page may quote a secret: the excerpt (stored by the monitor, quoted in the chain's diagnosis) shows
    none of it, whole in the excerpt or cut in two by its end."""
    token = "ghp_0123456789abcdefABCDEFGHIJklmnopqrst"
    with http_service() as (url, state):
        state.status = 500
        async with guarded_async_client(LOOPBACK) as http:
            for start in (10, BODY_EXCERPT - 20):
                state.body = f"{'x' * start} {token} and more".encode()
                outcome = await check_http(http, url, timeout=5)
                assert outcome.body_excerpt is not None and len(outcome.body_excerpt) <= BODY_EXCERPT
                assert not shown(token[4:], outcome.body_excerpt), outcome.body_excerpt
    assert outcome.body_excerpt == "x" * (BODY_EXCERPT - 20) + " "  # the word the cut splits is left out


async def test_http_expect_status_below_sets_the_bar():
    with http_service() as (url, state):
        state.status = 302  # not followed: the answer itself is judged
        async with guarded_async_client(LOOPBACK) as http:
            default = await check_http(http, url, timeout=5)
            strict = await check_http(http, url, timeout=5, expect_status_below=300)
    assert default.healthy and default.status_code == 302
    assert (strict.healthy, strict.error_kind, strict.error) == (False, "http_status", "HTTP 302")


async def test_https_certificate_valid_is_up_with_its_expiry(certificates):
    with https_service(certificates.valid, certificates.key) as url:
        async with trusting(certificates.ca) as http:
            outcome = await check_http(http, url, timeout=5, keyword="ready")
    assert (outcome.status, outcome.healthy, outcome.status_code, outcome.keyword_found) == ("up", True, 200, True)
    assert outcome.tls_days_left == 29  # 30 days less the seconds since it was made: 29 whole days
    shown = subprocess.run(
        ["openssl", "x509", "-in", str(certificates.valid), "-noout", "-enddate"], check=True, capture_output=True
    )
    not_after = ssl.cert_time_to_seconds(shown.stdout.decode().strip().removeprefix("notAfter="))
    assert outcome.tls_not_after == time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(not_after))


async def test_https_certificate_expiring_within_the_window_is_degraded_but_healthy(certificates):
    with https_service(certificates.expiring, certificates.key) as url:
        async with trusting(certificates.ca) as http:
            soon = await check_http(http, url, timeout=5)  # 3 days < the default 14
            relaxed = await check_http(http, url, timeout=5, tls_expiry_days=2)
            off = await check_http(http, url, timeout=5, tls_expiry_days=0)
    assert (soon.status, soon.healthy, soon.error, soon.error_kind) == ("degraded", True, None, None)
    assert soon.tls_days_left == 2 and soon.status_code == 200
    assert relaxed.status == "up" and off.status == "up"  # 2.99 days left is not within 2 days


async def test_https_expired_certificate_is_down_with_a_tls_error(certificates):
    with https_service(certificates.expired, certificates.key) as url:
        async with trusting(certificates.ca) as http:
            expired = await check_http(http, url, timeout=5)
        async with guarded_async_client(LOOPBACK) as untrusting:  # the system CAs: our test CA is unknown
            unknown = await check_http(untrusting, url, timeout=5)
    assert (expired.status, expired.healthy, expired.error_kind) == ("down", False, "tls")
    assert expired.error == "TLS certificate rejected: certificate has expired"
    assert expired.status_code is None and expired.tls_days_left is None
    assert (unknown.error_kind, unknown.status) == ("tls", "down")
    assert "unable to get local issuer certificate" in unknown.error


async def test_the_old_call_keeps_its_shape():
    with http_service() as (url, state):
        state.status = 503
        async with httpx.AsyncClient() as http:
            outcome = await check_http(http, url, timeout=5)
    assert outcome.as_dict() == {
        "url": url,
        "healthy": False,
        "status_code": 503,
        "latency_ms": outcome.latency_ms,
        "error": "HTTP 503",
        "error_kind": "http_status",
        "body_excerpt": "ok",
        "kind": "http",
        "status": "down",
        "target": url,
        "answers": None,
        "keyword_found": None,
        "tls_days_left": None,
        "tls_not_after": None,
    }


async def test_tcp_listening_socket_is_up_and_a_closed_port_is_refused():
    with listening() as sock:
        port = sock.getsockname()[1]
        up = await check_tcp("127.0.0.1", port, timeout=5, policy=LOOPBACK)
        by_name = await check_tcp("localhost", port, timeout=5, policy=LOOPBACK)
    closed = free_port()
    down = await check_tcp("127.0.0.1", closed, timeout=5, policy=LOOPBACK)
    assert (up.status, up.healthy, up.kind, up.target, up.answers) == (
        "up",
        True,
        "tcp",
        f"127.0.0.1:{port}",
        ["127.0.0.1"],
    )
    assert up.url == f"tcp://127.0.0.1:{port}" and up.latency_ms is not None and up.status_code is None
    assert by_name.healthy and by_name.answers in (["127.0.0.1"], ["::1"])
    assert (down.status, down.error_kind, down.error, down.target) == (
        "down",
        "refused",
        "connection refused",
        f"127.0.0.1:{closed}",
    )


async def test_tcp_targets_the_policy_refuses_are_never_dialled():
    metadata = await check_tcp("169.254.169.254", 80, timeout=5, policy=LOOPBACK)
    assert (metadata.status, metadata.error_kind) == ("down", "unsafe_target")
    assert metadata.error == (
        "169.254.169.254 is a link-local/cloud-metadata address: outbound requests there are refused"
    )
    assert metadata.answers is None
    with listening() as sock:
        port = sock.getsockname()[1]
        refused = await check_tcp("localhost", port, timeout=5, policy=OutboundPolicy())
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):  # the backlog is empty: no connection was made
            sock.accept()
    assert refused.error_kind == "unsafe_target" and "localhost resolves to" in refused.error
    assert "is loopback: refused" in refused.error


async def test_tcp_timeout_when_the_listener_backlog_is_full():
    """A full accept queue: Linux drops further SYNs, so the connect hangs until our timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        port = sock.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        try:
            started = time.monotonic()
            outcome = await check_tcp("127.0.0.1", port, timeout=0.3, policy=LOOPBACK)
            elapsed = time.monotonic() - started
        finally:
            for filler in fillers:
                filler.close()
    assert (outcome.status, outcome.error_kind, outcome.error) == ("down", "timeout", "no connection within 0.3s")
    assert 0.3 <= elapsed < 2


async def test_dns_resolves_checks_expected_answers_and_reports_missing_names():
    up = await check_dns("localhost", timeout=5)
    expected = await check_dns("localhost", expect=["10.0.0.5", "127.0.0.1"], timeout=5)
    wrong = await check_dns("localhost", expect=["10.0.0.5"], timeout=5)
    missing = await check_dns("no-such-service.invalid", timeout=5)
    assert (up.status, up.healthy, up.kind, up.target, up.answers) == ("up", True, "dns", "localhost", ["127.0.0.1"])
    assert up.url == "dns://localhost?type=A" and up.latency_ms is not None
    assert expected.status == "up"
    assert (wrong.status, wrong.error_kind, wrong.answers) == ("down", "unexpected_answer", ["127.0.0.1"])
    assert wrong.error == "localhost resolves to 127.0.0.1, none of 10.0.0.5"
    assert (missing.status, missing.healthy, missing.error_kind, missing.answers) == ("down", False, "dns", None)
    assert missing.error.startswith("no-such-service.invalid does not resolve (A): ")


async def test_dns_compares_addresses_not_spellings():
    outcome = await check_dns("127.0.0.1", record_type="A", expect=["127.000.000.001", "127.0.0.1"], timeout=5)
    assert outcome.status == "up"
    with pytest.raises(ValueError, match="record_type"):
        await check_dns("localhost", record_type="MX", timeout=5)


async def test_run_check_takes_a_service_definition():
    with listening() as sock, http_service() as (url, _):
        async with guarded_async_client(LOOPBACK) as http:
            tcp = await run_check(http, {"type": "tcp", "host": "127.0.0.1", "port": sock.getsockname()[1]}, timeout=5)
            web = await run_check(http, {"type": "http", "url": url, "keyword": "ok", "tls_expiry_days": 7}, timeout=5)
            dns = await run_check(http, {"type": "dns", "name": "localhost", "expect": []}, timeout=5)
            async with guarded_async_client(OutboundPolicy()) as strict:  # TCP follows the client's policy
                refused = await run_check(strict, {"type": "tcp", "host": "127.0.0.1", "port": 1}, timeout=5)
            with pytest.raises(ValueError, match="unknown check type 'smtp'"):
                await run_check(http, {"type": "smtp"}, timeout=5)
            with pytest.raises(ValueError, match="a tcp check needs 'port'"):
                await run_check(http, {"type": "tcp", "host": "db"}, timeout=5)
    assert [tcp.status, web.status, dns.status] == ["up", "up", "up"] and web.keyword_found is True
    assert refused.error_kind == "unsafe_target"
