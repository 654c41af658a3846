"""`agent-monitor up`: the whole stack as one supervised process tree — Postgres, Temporal, migrations, worker,
web (and the indexer). Start-up stops at the first failure; once up, a child that exits is restarted
(cli/supervisor.py) and `up` runs until SIGINT, SIGTERM or SIGHUP, then stops everything it started."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import httpx

from cli.postgres import EmbeddedServer
from cli.process_events import ProcessEvents
from cli.supervisor import Child, ChildSpec, StackError, Supervisor
from core.db import run_migrations, sqlalchemy_url
from core.settings import Settings
from core.supervision import LOCK_FILE, STATUS_FILE
from core.temporal_dev import start_dev_argv

__all__ = ["STATUS_FILE", "LOCK_FILE", "Stack", "StackError"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TICK_SECONDS = 0.2


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, child: Child) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc is not None and child.proc.poll() is not None:
            raise StackError(f"{what} exited with code {child.proc.returncode} during start-up")
        if predicate():
            return
        time.sleep(0.1)
    raise StackError(f"{what} was not ready after {timeout:.0f}s")


def lock_data_dir(data_dir: Path) -> int:
    """Hold DATA_DIR/up.lock while `up` runs (the kernel drops it when `up` dies, however it dies): one `up` per
    data dir. Returns the descriptor that holds it."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StackError(f"another `agent-monitor up` (pid {holder}) runs on {data_dir}: stop it first") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


class Stack:
    def __init__(self, settings: Settings, echo: Callable[[str], None]) -> None:
        self.settings = settings
        self.echo = echo
        self.supervisor = Supervisor(echo)
        self.postgres: EmbeddedServer | None = None
        self.phase = "starting"
        self.stop_signal: int | None = None
        self.force = False
        self._lock: int | None = None
        self.events: ProcessEvents | None = None

    def handle_signals(self) -> None:
        """SIGINT, SIGTERM and SIGHUP stop `up`: while starting, at once (KeyboardInterrupt); once up, after the
        current tick; while stopping, a second one kills what is left instead of waiting."""

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            if self.phase == "stopping":
                self.force = True
                return
            self.stop_signal = signum
            if self.phase == "starting":
                raise KeyboardInterrupt

        for signum in STOP_SIGNALS:
            if signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN:
                continue  # started under nohup: a closed terminal is not a request to stop
            signal.signal(signum, on_signal)

    def start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = lock_data_dir(s.data_dir)
        self.supervisor.status_file = s.data_dir / STATUS_FILE
        log_dir = s.data_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        env = dict(os.environ)

        if s.embedded_postgres:
            self.postgres = EmbeddedServer(s.data_dir, self.echo)
            self.postgres.prepare()
            server = self.postgres
            child = self.supervisor.start(server.spec(dict(env)))
            _wait_until(lambda: server.ready(child.pid or -1), timeout=60, what="Postgres", child=child)
            database_url = server.url
            self.echo(f"postgres   embedded, data in {server.pgdata}, log in {server.pgdata}/log")
        else:
            database_url = sqlalchemy_url(s.database_url.get_secret_value())
        env["DATABASE_URL"] = database_url

        if s.embedded_temporal:
            for port, name in ((s.temporal_port, "TEMPORAL_PORT"), (s.temporal_ui_port, "TEMPORAL_UI_PORT")):
                if _port_in_use("127.0.0.1", port):
                    raise StackError(f"port {port} is in use: stop what holds it, or set {name} or TEMPORAL_ADDRESS")
            argv = start_dev_argv(data_dir=s.data_dir.resolve(), port=s.temporal_port, ui_port=s.temporal_ui_port)
            temporal = self.supervisor.start(
                ChildSpec(
                    name="temporal",
                    argv=argv,
                    env=env,
                    layer=1,
                    log_to=log_dir / "temporal.log",
                    stop_signal=signal.SIGINT,
                    death_signal=signal.SIGINT,
                    nice=s.background_nice,
                )
            )
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
        self.events = self.supervisor.on_change = ProcessEvents(database_url)
        self._bootstrap_admin(database_url)

        if _port_in_use(s.web_host if s.web_host != "0.0.0.0" else "127.0.0.1", s.web_port):  # noqa: S104
            raise StackError(f"port {s.web_port} is in use: stop what holds it or set WEB_PORT")
        cli = [sys.executable, "-m", "cli.main"]
        # Background work at a lower CPU priority than the web (BACKGROUND_NICE): Postgres stays at the web's, as the
        # web waits on it.
        nice = s.background_nice
        self.supervisor.start(ChildSpec("worker", [*cli, "worker"], env, layer=2, nice=nice))
        if s.embedding_provider != "off":  # semantic search: embeds conversation messages as they arrive
            self.supervisor.start(ChildSpec("indexer", [*cli, "indexer"], env, layer=2, nice=nice))
        web = self.supervisor.start(ChildSpec("web", [*cli, "web"], env, layer=2))

        def web_ready() -> bool:
            try:
                return httpx.get(f"{s.web_url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_until(web_ready, timeout=60, what="web", child=web)
        self.phase = "up"  # from here a stop signal ends watch(), even before it runs

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
        """Supervise until SIGINT/SIGTERM/SIGHUP; exit code 0. A child that exits is restarted, never fatal."""
        self.supervisor.state = "up"
        self.supervisor.write_status()
        while self.stop_signal is None:
            self.supervisor.tick()
            time.sleep(TICK_SECONDS)
        return 0

    def stop(self) -> None:
        """Web, indexer and worker first, then Temporal, then Postgres, each with a bounded wait, then SIGKILL.
        Says what it stopped and what it leaves running (what `up` did not start)."""
        self.phase = "stopping"  # first: a signal from here on cannot interrupt the stop (it hurries it)
        why = f"{signal.Signals(self.stop_signal).name} received; " if self.stop_signal is not None else ""
        self.echo(f"{why}stopping…")
        if self.events is not None:
            self.events.close()  # its connection would hold up Postgres's stop
        stopped = self.supervisor.stop_all(force=lambda: self.force)
        if self.postgres is not None:
            self.postgres.release()
        s = self.settings
        left = ["Postgres at DATABASE_URL"] if not s.embedded_postgres else []
        left += [f"Temporal at {s.effective_temporal_address}"] if not s.embedded_temporal else []
        if left:
            self.echo(f"left running (not started by up): {', '.join(left)}")
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock)
        self.echo(f"stopped {', '.join(stopped) or 'nothing'}")
