"""The supervisor's rules on small real processes: restarts with backoff, crash loops, stop order, PDEATHSIG."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from cli.supervisor import RESTART_REQUESTED, ChildSpec, RestartPolicy, Supervisor, describe_exit

FAST = RestartPolicy(first_delay=0.1, max_delay=0.4, healthy_after=1.0, loop_exits=4, loop_window=60)


def _spec(name: str, script: str, *, layer: int = 0, **options: Any) -> ChildSpec:
    return ChildSpec(name, ["sh", "-c", script], dict(os.environ), layer=layer, **options)


def _run_until(supervisor: Supervisor, lines: list[str], done: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "\n".join(lines)
        supervisor.tick()
        time.sleep(0.02)


def _supervisor(tmp_path: Path | None = None) -> tuple[Supervisor, list[str]]:
    lines: list[str] = []
    return Supervisor(lines.append, tmp_path / "supervisor.json" if tmp_path else None, policy=FAST), lines


def test_describe_exit():
    assert describe_exit(-9) == "-9 (SIGKILL)"
    assert describe_exit(-15) == "-15 (SIGTERM)"
    assert describe_exit(3) == "code 3"


def test_a_crashing_child_is_restarted_with_growing_capped_delays_and_a_crash_loop_is_said_once(tmp_path):
    supervisor, lines = _supervisor(tmp_path)
    supervisor.start(_spec("flaky", "exit 3"))
    supervisor.start(_spec("steady", "sleep 60"))
    steady = supervisor.children[1].pid
    try:
        _run_until(supervisor, lines, lambda: supervisor.children[0].restarts >= 6)
        exits = [line.split(" ", 1)[1] for line in lines if "exited" in line]
        assert exits[:6] == [
            "flaky exited with code 3; restarting in 0.1 s (restart 1)",
            "flaky exited with code 3; restarting in 0.2 s (restart 2)",
            "flaky exited with code 3; restarting in 0.4 s (restart 3)",
            "flaky exited with code 3; restarting in 0.4 s (restart 4)",  # capped
            "flaky exited with code 3; restarting in 0.4 s (restart 5)",
            "flaky exited with code 3; restarting in 0.4 s (restart 6)",
        ]
        loops = [line for line in lines if "keeps crashing" in line]
        assert len(loops) == 1, lines
        assert (
            "!!! flaky keeps crashing: 4 exits in the last 1 min; still restarting it, every 0.4 s at most" in loops[0]
        )
        assert supervisor.children[1].pid == steady and supervisor.children[1].alive()  # the others keep running
        status = json.loads((tmp_path / "supervisor.json").read_text())
        flaky = next(c for c in status["children"] if c["name"] == "flaky")
        assert flaky["restarts"] >= 6 and flaky["last_exit"] == "code 3" and flaky["crash_loop"] is True
    finally:
        supervisor.stop_all()


def test_a_child_asking_for_a_restart_is_started_again_at_once_and_never_counted_as_crashing(tmp_path):
    """A worker whose installed agents changed exits with 75: started again with no backoff, no crash loop."""
    supervisor, lines = _supervisor(tmp_path)
    supervisor.start(_spec("worker", f"sleep 0.05; exit {RESTART_REQUESTED}"))
    try:
        _run_until(supervisor, lines, lambda: supervisor.children[0].restarts >= 8)
        assert not [line for line in lines if "keeps crashing" in line], lines
        assert not [line for line in lines if "restarting in" in line], lines
        assert "worker asked to be restarted (code 75); starting it again now" in lines[0]
        status = json.loads((tmp_path / "supervisor.json").read_text())
        assert status["children"][0]["last_exit"] == "a restart it asked for"
        assert status["children"][0]["crash_loop"] is False
    finally:
        supervisor.stop_all()


def test_a_killed_child_is_named_by_its_signal_and_its_backoff_starts_over_after_a_healthy_run():
    supervisor, lines = _supervisor()
    child = supervisor.start(_spec("worker", "sleep 60"))
    try:
        for _ in range(2):
            old = child.pid
            assert old is not None
            os.kill(old, signal.SIGKILL)
            _run_until(supervisor, lines, lambda old=old: child.alive() and child.pid != old)
        assert [line.split(" ", 1)[1] for line in lines if "exited" in line] == [
            "worker exited with -9 (SIGKILL); restarting in 0.1 s (restart 1)",
            "worker exited with -9 (SIGKILL); restarting in 0.2 s (restart 2)",
        ]
        started = time.monotonic()
        _run_until(supervisor, lines, lambda: time.monotonic() - started > FAST.healthy_after + 0.2)
        os.kill(child.pid or 0, signal.SIGKILL)
        _run_until(supervisor, lines, lambda: child.restarts == 3)
        assert lines[-1].endswith("worker exited with -9 (SIGKILL); restarting in 0.1 s (restart 3)")
    finally:
        supervisor.stop_all()


def test_stop_goes_layer_by_layer_and_kills_what_does_not_stop_with_its_group():
    supervisor, lines = _supervisor()
    supervisor.start(_spec("database", "sleep 60", layer=0))
    # Ignores SIGTERM; its `sleep` is a second process in its group that must not outlive it.
    stubborn = supervisor.start(_spec("app", "trap '' TERM; sleep 60 & wait; wait", layer=1, stop_grace=0.5))
    time.sleep(0.3)
    group = [p for p in psutil.process_iter() if _pgid(p) == stubborn.pid]
    assert len(group) == 2
    started = time.monotonic()
    assert supervisor.stop_all() == ["app", "database"]
    assert time.monotonic() - started < 10
    assert any("app did not stop in 0.5 s; killing it" in line for line in lines)
    assert [p for p in group if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except OSError:
        return None


@pytest.mark.parametrize("death_signal", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_children_die_with_a_killed_supervisor(tmp_path, death_signal):
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from cli.supervisor import ChildSpec, Supervisor
        supervisor = Supervisor(print)
        child = supervisor.start(ChildSpec("c", ["sleep", "60"], dict(os.environ), layer=0,
                                           death_signal=signal.Signals({int(death_signal)})))
        print(child.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=Path.cwd())
    assert parent.returncode == -9, parent.stderr
    try:
        child = psutil.Process(int(parent.stdout.split()[0]))
    except psutil.NoSuchProcess:
        return
    deadline = time.monotonic() + 10
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the child outlived its supervisor"
        time.sleep(0.05)


def test_a_background_child_and_every_thread_it_starts_run_at_a_lower_cpu_priority():
    """`up` starts the worker, the indexer and Temporal with `nice` (BACKGROUND_NICE): the threads they start later
    inherit it; the others run at the supervisor's own priority."""
    supervisor, _ = _supervisor()
    threads = "import threading, time; [threading.Thread(target=time.sleep, args=(60,)).start() for _ in range(3)]"
    background = supervisor.start(
        ChildSpec("worker", [sys.executable, "-c", threads], dict(os.environ), layer=1, nice=7)
    )
    web = supervisor.start(_spec("web", "sleep 60", layer=1))
    try:
        deadline = time.monotonic() + 30
        while len(os.listdir(f"/proc/{background.pid}/task")) < 4:
            assert time.monotonic() < deadline, "the child did not start its threads"
            time.sleep(0.05)
        own = os.getpriority(os.PRIO_PROCESS, 0)
        tasks = [int(tid) for tid in os.listdir(f"/proc/{background.pid}/task")]
        assert [os.getpriority(os.PRIO_PROCESS, tid) for tid in tasks] == [own + 7] * len(tasks)
        assert os.getpriority(os.PRIO_PROCESS, web.pid or 0) == own
    finally:
        supervisor.stop_all()
