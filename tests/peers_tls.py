"""Real TLS peers for tests: certificates made by the openssl command line (a CA and leaves valid 30 days, 3 days,
expired), an HTTPS server presenting one, a client trusting the CA; and a listening TCP socket."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from core.outbound import OutboundPolicy, guarded_async_client


@dataclass(frozen=True)
class Certificates:
    ca: Path
    key: Path
    valid: Path  # 30 days
    expiring: Path  # 3 days
    expired: Path  # notAfter yesterday


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_certificates(where: Path) -> Certificates:
    """A test CA and three certificates for 127.0.0.1 it signed, made in `where` by the openssl command line."""
    ca, ca_key, key, csr, ext = (where / n for n in ("ca.pem", "ca.key", "leaf.key", "leaf.csr", "ext.cnf"))
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "365", "-subj", "/CN=agent-monitor test CA")
    _openssl("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    signed = {}
    for name, days in (("valid", "30"), ("expiring", "3"), ("expired", "-1")):  # -1: notAfter before notBefore
        signed[name] = where / f"{name}.pem"
        _openssl(
            "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", days,
            "-extfile", ext, "-out", signed[name],
        )  # fmt: skip
    return Certificates(ca=ca, key=key, **signed)


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"checkout ready"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def https_service(certificate: Path, key: Path) -> Iterator[str]:
    """A real HTTPS server on 127.0.0.1 presenting the certificate; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)  # a failed handshake: the accept is dropped
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def listening() -> Iterator[socket.socket]:
    """A real listening TCP socket on 127.0.0.1 (connects complete in the backlog)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock


def trusting(ca: Path) -> httpx.AsyncClient:
    """The worker's kind of client (SSRF-guarded), trusting the test CA."""
    return guarded_async_client(OutboundPolicy(allow_loopback=True), verify=ssl.create_default_context(cafile=str(ca)))
