"""`agent-monitor up` run as a user runs it, for the tests: its own DATA_DIR and ports, its output collected line by
line, its process tree recorded so that the tests can tell whether anything outlived it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.peers import free_port

CLI = [sys.executable, "-m", "cli.main"]


def up_env(data_dir: Path) -> dict[str, str]:
    """The environment of an `up` on data_dir with free ports (embedded Postgres and Temporal)."""
    web_port, temporal_port, ui_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")}
    env.update(
        DATA_DIR=str(data_dir),
        WEB_PORT=str(web_port),
        TEMPORAL_PORT=str(temporal_port),
        TEMPORAL_UI_PORT=str(ui_port),
        AGENT_MONITOR_URL=f"http://127.0.0.1:{web_port}",
        OUTBOUND_ALLOW_LOOPBACK="true",  # the services it checks run on this machine
    )
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    """Every process of the Postgres server on data_dir (postmaster and backends: their working directory)."""
    pgdata = str(data_dir.resolve() / "pgdata")
    found = []
    for proc in psutil.process_iter(["name", "cwd", "cmdline"]):
        if proc.info["name"] == "postgres" and (
            proc.info["cwd"] == pgdata or pgdata in " ".join(proc.info["cmdline"] or [])
        ):
            found.append(proc)
    return found


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])


def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            pass
    return alive


# `up` as started from a shell: SIGHUP at its default even when the tests run under nohup (which ignores it, and
# `up` then rightly leaves SIGHUP alone: a closed terminal is not a request to stop). An exec, not preexec_fn: the
# tests have threads.
FROM_A_TERMINAL = [
    sys.executable, "-c",
    "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])",
]  # fmt: skip


class Up:
    """One `agent-monitor up` run."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.data_dir = Path(env["DATA_DIR"])
        self.base = env["AGENT_MONITOR_URL"]
        self.lines: list[str] = []
        self.ready = threading.Event()
        argv = [*FROM_A_TERMINAL, *CLI, "up"]  # the same process: exec keeps the pid
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if "Agent Monitor is up." in line:
                self.ready.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 240) -> None:
        if not self.ready.wait(timeout):
            self.proc.kill()
            raise AssertionError("up did not get ready:\n" + "\n".join(self.lines[-40:]))

    def wait_line(self, pattern: str, timeout: float = 120, start: int = 0) -> str:
        """The first line from index `start` on that matches the regex `pattern`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                if re.search(pattern, line):
                    return line
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines[-40:]))

    def tree(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def child(self, name: str) -> psutil.Process:
        """up's direct child `name` (worker, web, indexer, temporal, postgres), by its command line."""
        for proc in psutil.Process(self.proc.pid).children():
            cmdline = proc.cmdline()
            if (
                (name == "temporal" and "start-dev" in cmdline)
                or (name == "postgres" and proc.name() == "postgres")
                or cmdline[-1:] == [name]
            ):
                return proc
        raise AssertionError(
            f"up has no child {name}: {[p.cmdline() for p in psutil.Process(self.proc.pid).children()]}"
        )

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 120) -> int:
        """Send `sig`, wait for `up` to exit, and check that nothing it started outlived it: not a process of its
        tree, not a member of their process groups, not a Postgres process on its data dir."""
        tree = self.tree()
        groups = {os.getpgid(p.pid) for p in running(tree)}
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        assert leftovers(tree, groups, self.data_dir, timeout=15) == [], f"orphans after {sig.name}"
        return code


def leftovers(tree: list[psutil.Process], groups: set[int], data_dir: Path, timeout: float) -> list[psutil.Process]:
    """What is still running, after waiting up to `timeout`, of tree, of those process groups and of the data
    dir's Postgres."""
    deadline = time.monotonic() + timeout
    while True:
        in_groups = []
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) in groups:
                    in_groups.append(proc)
            except OSError:
                pass
        left = running(tree) + running(in_groups) + running(postgres_processes(data_dir))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def api(up: Up, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{up.base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30, **kwargs)


def incident_completes(up: Up, token: str, service_url: str, timeout: float = 180) -> dict[str, Any]:
    """Open an incident through the API and wait for its workflow to complete; returns the incident."""
    created = api(
        up,
        "POST",
        "/api/incidents",
        token,
        json={"title": "checkout 500s", "service": "checkout", "severity": "P3", "service_url": service_url},
    )
    assert created.status_code == 201, created.text
    incident_id = created.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        detail: dict[str, Any] = api(up, "GET", f"/api/incidents/{incident_id}", token).json()
        if (detail.get("workflow") or {}).get("status") in ("completed", "failed"):
            break
        time.sleep(0.3)
    assert (detail.get("workflow") or {}).get("status") == "completed", detail
    return detail
