"""What `agent-monitor up` does with the processes it starts: each runs in its own process group, bound to `up`
by PR_SET_PDEATHSIG; one that exits on its own is restarted with backoff while the others keep running; on stop,
each layer is signalled in turn (the app first, infrastructure last) with a bounded wait, then killed.

Rules (docs/operations.md, "Supervision"): restarts wait 1 s, 2 s, 4 s … up to 30 s; a child that has run for
60 s starts over at 1 s. Five exits within five minutes is a crash loop: said loudly, once, and the restarts go
on (a dependency that comes back ends most loops by itself)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

GROUP_GONE_TIMEOUT = 5.0
# A child that exits with this code asks to be started again at once (a worker whose installed agents changed,
# worker/plugins.py): not a crash, so no backoff and not counted towards a crash loop. EX_TEMPFAIL of sysexits.h.
RESTART_REQUESTED = 75  # = worker.plugins.RESTART_REQUESTED (cli may not be imported by the worker)

PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl  # loaded before any fork: the child only calls it


class StackError(RuntimeError):
    """`up` cannot go on; the message is one line for the operator."""


def describe_exit(code: int) -> str:
    """-9 → "-9 (SIGKILL)", 1 → "code 1": how an exit reads in the log."""
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return f"code {code}"


def _bound_to(parent: int, death_signal: int, nice: int = 0) -> Callable[[], None]:
    def preexec() -> None:
        # Runs in the child after fork and after any change of user (which would clear the setting), before exec.
        _prctl(PR_SET_PDEATHSIG, death_signal)
        if os.getppid() != parent:  # `up` died before the line above: nobody would send the signal
            os._exit(1)
        if nice:  # before exec: every thread the program starts inherits it
            os.nice(nice)

    return preexec


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 1.0
    max_delay: float = 30.0
    healthy_after: float = 60.0  # seconds of running after which a child's backoff starts over
    loop_exits: int = 5  # this many exits within loop_window seconds is a crash loop
    loop_window: float = 300.0


@dataclass
class ChildSpec:
    """How to run one child. `layer` orders the stop: higher layers stop first, one layer at a time."""

    name: str
    argv: list[str]
    env: dict[str, str]
    layer: int
    log_to: Path | None = None  # None: `up`'s own output
    stop_signal: signal.Signals = signal.SIGTERM
    # What the kernel sends the child if `up` dies: SIGKILL for stateless processes (a worker whose Temporal is
    # gone too may take long to drain); a server that keeps data gets its own clean-shutdown signal.
    death_signal: signal.Signals = signal.SIGKILL
    stop_grace: float = 10.0
    user: str | None = None
    before_start: Callable[[], None] | None = None  # may raise StackError: not now, try again later
    nice: int = 0  # added to up's own: a lower CPU priority (background work)


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay: float = 0.0  # the wait before the next restart; the policy's first_delay to begin with
    restart_at: float | None = None
    last_exit: str | None = None
    last_exit_at: float | None = None
    exits: deque[float] = field(default_factory=deque)
    looping: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        spec = self.spec
        if spec.before_start is not None:
            spec.before_start()
        out = open(spec.log_to, "ab") if spec.log_to else None  # noqa: SIM115 (the child owns it)
        try:
            self.proc = subprocess.Popen(  # noqa: S603
                spec.argv,
                env=spec.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # its own process group: a terminal's Ctrl-C reaches `up` alone
                user=spec.user,
                preexec_fn=_bound_to(os.getpid(), spec.death_signal, spec.nice),
            )
        finally:
            if out is not None:
                out.close()
        self.started_at = time.monotonic()
        self.restart_at = None


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until none of `procs` runs (a zombie counts as gone: its parent reaps it); returns those left."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(proc)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of a child's process group (a worker's commands, a web server's workers) and wait
    for it to be gone, so that a restart does not meet the old one's sockets or locks."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
    wait_gone(members, GROUP_GONE_TIMEOUT)


class Supervisor:
    """The children of one `up`, restarted when they exit on their own. Every call comes from the main thread
    (PR_SET_PDEATHSIG fires when the thread that forked the child ends)."""

    def __init__(
        self, echo: Callable[[str], None], status_file: Path | None = None, policy: RestartPolicy | None = None
    ) -> None:
        self.echo = echo
        self.status_file = status_file
        self.policy = policy or RestartPolicy()
        self.children: list[Child] = []
        self.state = "starting"
        # Told of each exit and restart once `up` is up (cli/stack.py publishes them as events for the overview);
        # it must not block nor raise.
        self.on_change: Callable[[str, dict[str, Any]], None] | None = None

    def say(self, line: str) -> None:
        self.echo(f"{time.strftime('%H:%M:%S')} {line}")

    def start(self, spec: ChildSpec) -> Child:
        """Start a child now (a failure to start is a StackError: `up` is still starting)."""
        child = Child(spec, delay=self.policy.first_delay)
        self.children.append(child)
        try:
            child.spawn()
        except OSError as err:
            raise StackError(f"cannot start {spec.name}: {err}") from None
        self.write_status()
        return child

    def tick(self) -> None:
        """Notice exits and restart what is due; call every fraction of a second."""
        now = time.monotonic()
        changed = False
        for child in self.children:
            if child.proc is not None and child.restart_at is None and child.proc.poll() is not None:
                self._exited(child, now)
                changed = True
            elif child.restart_at is not None and now >= child.restart_at:
                self._restart(child, now)
                changed = True
            elif child.alive() and now - child.started_at >= self.policy.healthy_after:
                self._healthy(child)
        if changed:
            self.write_status()

    def _healthy(self, child: Child) -> None:
        """It ran long enough: its next crash waits the first delay again, and a crash loop is over."""
        child.delay, child.looping = self.policy.first_delay, False
        child.exits.clear()

    def _exited(self, child: Child, now: float) -> None:
        assert child.proc is not None
        _kill_group(child.proc.pid)
        if child.proc.returncode == RESTART_REQUESTED:
            child.last_exit, child.last_exit_at = "a restart it asked for", time.time()
            child.restarts += 1
            self.say(f"{child.name} asked to be restarted (code {RESTART_REQUESTED}); starting it again now")
            child.restart_at = now
            self._tell("process.exited", child)
            return
        if now - child.started_at >= self.policy.healthy_after:
            self._healthy(child)
        child.last_exit, child.last_exit_at = describe_exit(child.proc.returncode), time.time()
        child.exits.append(now)
        while child.exits and now - child.exits[0] > self.policy.loop_window:
            child.exits.popleft()
        child.restarts += 1
        self.say(
            f"{child.name} exited with {child.last_exit}; restarting in {child.delay:g} s (restart {child.restarts})"
        )
        if len(child.exits) >= self.policy.loop_exits and not child.looping:
            child.looping = True
            where = f"; see {child.spec.log_to}" if child.spec.log_to else ""
            self.say(
                f"!!! {child.name} keeps crashing: {len(child.exits)} exits in the last "
                f"{self.policy.loop_window / 60:g} min; still restarting it, every "
                f"{self.policy.max_delay:g} s at most{where}"
            )
        self._schedule(child, now)
        self._tell("process.exited", child)

    def _tell(self, kind: str, child: Child) -> None:
        if self.on_change is not None and self.state == "up":
            self.on_change(kind, self._describe(child, time.monotonic(), time.time()))

    def _schedule(self, child: Child, now: float) -> None:
        child.restart_at = now + child.delay
        child.delay = min(child.delay * 2, self.policy.max_delay)

    def _restart(self, child: Child, now: float) -> None:
        try:
            child.spawn()
        except (StackError, OSError) as err:
            child.restarts += 1
            self.say(
                f"{child.name} could not start: {err}; trying again in {child.delay:g} s (restart {child.restarts})"
            )
            self._schedule(child, now)
            return
        self.say(f"{child.name} started again (pid {child.pid})")
        self._tell("process.restarted", child)

    def stop_all(self, *, force: Callable[[], bool] = lambda: False) -> list[str]:
        """Stop every child, highest layer first; each layer gets its grace, then SIGKILL. `force()` turning
        true (a second Ctrl-C) kills what is left at once. Returns the names stopped."""
        self.state = "stopping"
        self.write_status()
        stopped: list[str] = []
        for layer in sorted({c.spec.layer for c in self.children}, reverse=True):
            group = [c for c in self.children if c.spec.layer == layer]
            for child in group:
                child.restart_at = None
                if child.alive():
                    assert child.proc is not None
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.send_signal(child.spec.stop_signal)
            signalled = time.monotonic()  # the layer's children stop together: their waits overlap
            for child in group:
                if child.proc is None:
                    continue
                deadline = signalled + child.spec.stop_grace
                while child.proc.poll() is None and time.monotonic() < deadline and not force():
                    time.sleep(0.05)
                if child.proc.poll() is None:
                    self.say(f"{child.name} did not stop in {child.spec.stop_grace:g} s; killing it")
                    child.proc.kill()
                    child.proc.wait()
                _kill_group(child.proc.pid)
                stopped.append(child.name)
        self.state = "stopped"
        self.write_status()
        return stopped

    @staticmethod
    def _describe(c: Child, now: float, wall: float) -> dict[str, Any]:
        """One child as supervisor.json and the process events show it."""

        def stamp(at: float | None) -> str | None:
            return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds") if at is not None else None

        return {
            "name": c.name,
            "pid": c.pid if c.alive() else None,
            "state": "running" if c.alive() else ("restarting" if c.restart_at is not None else "stopped"),
            "restarts": c.restarts,
            "last_exit": c.last_exit,
            "last_exit_at": stamp(c.last_exit_at),
            "restart_at": stamp(wall + c.restart_at - now) if c.restart_at is not None else None,
            "crash_loop": c.looping,
            "log": str(c.spec.log_to) if c.spec.log_to else None,
        }

    def write_status(self) -> None:
        """DATA_DIR/supervisor.json: what `agent-monitor status` shows (written whole, then renamed)."""
        if self.status_file is None:
            return
        now, wall = time.monotonic(), time.time()
        children = [self._describe(c, now, wall) for c in self.children]
        body = {
            "pid": os.getpid(),
            "state": self.state,
            "updated_at": datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds"),
            "children": children,
        }
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        tmp.replace(self.status_file)
