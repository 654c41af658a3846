"""A fault service's state directory (tests/scenarios/faultservice.py), read and written by the service, its
restart command and the tests alike: `starts` (incremented at every start, failed ones included), `pid`,
`command.json` (how to start it again), `control.json` (the faults that hold) and `service.out`.

Standard library only: the restart command runs under remediate_command with nothing of the worker's environment
but PATH, LANG and HOME.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FAULTS = ("crash", "oom", "errors", "slow", "flap", "config", "secret", "slow_start")
ONE_SHOT = ("crash", "oom")  # consumed when they act, so the next start does not act again
ROOT = Path(__file__).resolve().parents[2]  # where `python -m tests.scenarios.faultservice` runs from


def serve_argv(
    port: int, log: Path, state_dir: Path, name: str, dependency: str | None = None, tick: float = 1.0
) -> list[str]:
    """The command line that starts a fault service (run it from ROOT)."""
    argv = [sys.executable, "-m", "tests.scenarios.faultservice", "--port", str(port), "--log", str(log),
            "--state-dir", str(state_dir), "--name", name, "--tick", str(tick)]  # fmt: skip
    return argv + (["--dependency", dependency] if dependency else [])


def write_json(path: Path, value: Any) -> None:
    """Replace the file at once: readers see the old one or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def start_count(state_dir: Path) -> int:
    """How often the service was started (failed starts included)."""
    path = state_dir / "starts"
    return int(path.read_text() or 0) if path.exists() else 0


def count_start(state_dir: Path) -> int:
    """Count one more start; its number."""
    with open(state_dir / "starts.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        count = start_count(state_dir) + 1
        (state_dir / "starts").write_text(str(count))
        return count


def read_control(state_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        control = json.loads((state_dir / "control.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return control if isinstance(control, dict) else {}


def set_fault(state_dir: Path, name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Switch a fault on (its params replace earlier ones); it holds from now, for the current start."""
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}: one of {', '.join(FAULTS)}")
    entry = {**(params or {}), "since": time.time(), "start": start_count(state_dir)}
    with open(state_dir / "control.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_json(state_dir / "control.json", {**read_control(state_dir), name: entry})
    return entry


def clear_fault(state_dir: Path, name: str | None = None) -> None:
    """Switch one fault off, or all of them."""
    with open(state_dir / "control.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        control = read_control(state_dir)
        write_json(state_dir / "control.json", {} if name is None else {k: v for k, v in control.items() if k != name})


def active_faults(state_dir: Path, start: int) -> dict[str, dict[str, Any]]:
    """The faults that hold for the process of this start."""
    return {
        name: entry
        for name, entry in read_control(state_dir).items()
        if not (entry.get("clear_on_restart") and entry.get("start") != start)
    }


def current_pid(state_dir: Path) -> int | None:
    path = state_dir / "pid"
    return int(path.read_text()) if path.exists() else None


def alive(pid: int | None) -> bool:
    """Whether pid is a running fault service (not a zombie, not another program that got the pid since)."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X") and b"faultservice" in cmdline


def stop(state_dir: Path, grace: float = 5.0) -> int | None:
    """SIGTERM the running service, SIGKILL after the grace; the pid it had, or None if none ran."""
    pid = current_pid(state_dir)
    if not alive(pid):
        return None
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pid


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def restart(state_dir: Path, wait: float = 15.0) -> int:
    """Stop the service if it runs, start it again detached (its own session, output to service.out) and return
    once it listens (0) or has exited at start-up (1): what an init script's restart does."""
    command = json.loads((state_dir / "command.json").read_text())
    name, before = command["name"], start_count(state_dir)
    stopped = stop(state_dir)
    print(f"{name}: stopped pid {stopped}" if stopped else f"{name}: was not running")
    with open(state_dir / "service.out", "ab") as out:
        child = subprocess.Popen(  # noqa: S603 - our own argv, recorded by the service itself
            command["argv"], cwd=command["cwd"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if child.poll() is not None:
            last = Path(command["log"]).read_text().splitlines()[-1:] if Path(command["log"]).exists() else []
            print(f"{name}: exited at start-up with status {child.returncode}: {' '.join(last)}")
            return 1
        if start_count(state_dir) > before and _listening(command["port"]):
            print(f"{name}: restarted, pid {child.pid}, start #{start_count(state_dir)}")
            return 0
        time.sleep(0.05)
    print(f"{name}: started pid {child.pid} but it does not listen on {command['port']} after {wait:g} s")
    return 1
