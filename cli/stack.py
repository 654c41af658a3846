"""`agent-monitor up`: the whole stack as one process tree — Postgres, Temporal, migrations, worker, web."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.db import EmbeddedPostgres, run_migrations, sqlalchemy_url
from core.settings import Settings
from core.temporal_dev import start_dev_argv

PR_SET_PDEATHSIG = 1
STOP_GRACE_SECONDS = 10.0


class StackError(RuntimeError):
    """Start-up failed; the message is one line for the operator."""


def _die_with_parent() -> None:
    # Children get SIGTERM if `up` itself is killed, so nothing is ever orphaned.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _wait_until(
    predicate: Callable[[], bool], *, timeout: float, what: str, child: subprocess.Popen[bytes] | None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            raise StackError(f"{what} exited with code {child.returncode} during start-up")
        if predicate():
            return
        time.sleep(0.1)
    raise StackError(f"{what} was not ready after {timeout:.0f}s")


@dataclass
class Stack:
    settings: Settings
    echo: Callable[[str], None]
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    postgres: EmbeddedPostgres | None = None

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str], log_to: Path | None = None
    ) -> subprocess.Popen[bytes]:
        out = open(log_to, "ab") if log_to else None  # noqa: SIM115 (the child owns it)
        child = subprocess.Popen(  # noqa: S603
            argv, env=env, start_new_session=True, preexec_fn=_die_with_parent, stdout=out, stderr=out
        )
        if out is not None:
            out.close()
        self.children.append((name, child))
        return child
        self.children.append((name, child))
        return child

    def start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)

        if s.embedded_postgres:
            self.postgres = EmbeddedPostgres(s.data_dir)
            database_url = self.postgres.start(stop_at_exit=True)
            self.echo(f"postgres   embedded, data in {self.postgres.pgdata}")
        else:
            database_url = sqlalchemy_url(s.database_url.get_secret_value())
        env["DATABASE_URL"] = database_url

        if s.embedded_temporal:
            for port, name in ((s.temporal_port, "TEMPORAL_PORT"), (s.temporal_ui_port, "TEMPORAL_UI_PORT")):
                if _port_in_use("127.0.0.1", port):
                    raise StackError(f"port {port} is in use: stop what holds it, or set {name} or TEMPORAL_ADDRESS")
            argv = start_dev_argv(data_dir=s.data_dir.resolve(), port=s.temporal_port, ui_port=s.temporal_ui_port)
            log_dir = s.data_dir / "logs"
            log_dir.mkdir(exist_ok=True)
            temporal = self._spawn("temporal", argv, env, log_to=log_dir / "temporal.log")
            _wait_until(
                lambda: _port_in_use("127.0.0.1", s.temporal_port),
                timeout=60,
                what="Temporal dev server",
                child=temporal,
            )
            self.echo(
                f"temporal   embedded dev server on 127.0.0.1:{s.temporal_port}, history in "
                f"{s.data_dir}/temporal.db, log in {log_dir}/temporal.log"
            )
        env["TEMPORAL_ADDRESS"] = s.effective_temporal_address

        run_migrations(database_url)
        self.echo("migrations up to date")
        self._bootstrap_admin(database_url)

        if _port_in_use(s.web_host if s.web_host != "0.0.0.0" else "127.0.0.1", s.web_port):  # noqa: S104
            raise StackError(f"port {s.web_port} is in use: stop what holds it or set WEB_PORT")
        cli = [sys.executable, "-m", "cli.main"]
        self._spawn("worker", [*cli, "worker"], env)
        if s.embedding_provider != "off":  # semantic search: embeds conversation messages as they arrive
            self._spawn("indexer", [*cli, "indexer"], env)
        web = self._spawn("web", [*cli, "web"], env)

        def web_ready() -> bool:
            try:
                return httpx.get(f"{s.web_url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_until(web_ready, timeout=60, what="web", child=web)

    def _bootstrap_admin(self, database_url: str) -> None:
        from sqlmodel import Session

        from cli.users import INITIAL_PASSWORD_FILE, ensure_initial_admin
        from core.db import make_engine

        engine = make_engine(database_url, pool_size=1)
        with Session(engine) as session:
            password = ensure_initial_admin(session, self.settings.data_dir)
        engine.dispose()
        saved = self.settings.data_dir / INITIAL_PASSWORD_FILE
        if password:
            self.echo(f"created the first admin: log in as 'admin' with password {password}")
            self.echo(f"  (also saved in {saved}; change it on first login and delete the file)")
        elif saved.exists():
            self.echo(f"log in as 'admin' with the initial password in {saved}")

    def watch(self) -> int:
        """Block until Ctrl-C/SIGTERM (exit 0) or a child dies (exit 1)."""
        stop: dict[str, int | None] = {"signal": None}

        def on_signal(signum: int, _frame: object) -> None:
            stop["signal"] = signum

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while stop["signal"] is None:
            for name, child in self.children:
                if child.poll() is not None:
                    self.echo(f"{name} exited with code {child.returncode}; stopping everything")
                    return 1
            time.sleep(0.2)
        return 0

    def stop(self) -> None:
        """Stop in reverse order: web, worker, Temporal; then Postgres. Nothing is left running."""
        for name, child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM if name != "temporal" else signal.SIGINT)
                try:
                    child.wait(STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    self.echo(f"{name} did not stop in {STOP_GRACE_SECONDS:.0f}s; killing it")
                    child.kill()
                    child.wait()
        self.children.clear()
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
