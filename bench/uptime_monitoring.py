"""bench.uptime's monitoring part: the monitoring path's CPU with the uptime rollups maintained and without, in the
same run. The generated services are pointed at bench.monitoring's local HTTP targets and checked every 60 s by the
real `agent-monitor worker`, run through a bench-only wrapper that skips rollups.add_results / add_silenced while a
switch file exists (the product has no such setting); segments with the rollup writes on and off alternate (ABBA, so
drift and other load cancel out), and CPU (worker + Temporal + Postgres, as bench.monitoring counts it) per check is
compared."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import Engine, text

from bench.load import stack_env
from bench.local_stack import stop_process
from bench.monitoring import (
    CPUS,
    TIMEOUT_SECONDS,
    Cpu,
    child,
    measure_cpu,
    postmaster,
    read_line,
    target_process,
    temporal_server,
    worker_log,
)
from core.db import session_scope
from core.settings import Settings

TARGET_CPU_RATIO = 1.10
ROOT = Path(__file__).resolve().parent.parent


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def run_worker_with_switch(switch: Path) -> None:
    """`agent-monitor worker` whose rollup writes are skipped while `switch` exists (bench only: the product has no
    such setting)."""
    from activities.monitoring import rollups

    add_results, add_silenced = rollups.add_results, rollups.add_silenced

    def results(conn: Any, stored: set[tuple[int, datetime]]) -> None:
        if not switch.exists():
            add_results(conn, stored)

    def silenced(conn: Any, service_id: int, scheduled_at: datetime) -> None:
        if not switch.exists():
            add_silenced(conn, service_id, scheduled_at)

    rollups.add_results, rollups.add_silenced = results, silenced  # type: ignore[assignment]
    from cli.main import worker

    worker()


@contextmanager
def switched_worker(settings: Settings, tmp: Path, switch: Path) -> Iterator[Any]:
    """As bench.monitoring.worker_process, through run_worker_with_switch."""
    env = stack_env(
        settings, tmp, PYTHONPATH=str(ROOT), MONITORING_ENABLED="true", MONITOR_SHARDS="1",
        MONITOR_WORKFLOW_ID=settings.monitor_workflow_id, MONITOR_CONCURRENCY=str(settings.monitor_concurrency),
        MONITOR_WINDOW_SECONDS=str(settings.monitor_window_seconds),
        # The open incidents were loaded without a workflow: no reconciler starting them while CPU is measured.
        RECONCILE_INTERVAL_SECONDS="0",
    )  # fmt: skip
    log = (tmp / "worker.log").open("wb")
    argv = [sys.executable, "-m", "bench.uptime", "--role", "worker", "--switch", str(switch)]
    process = child(argv, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop_process(process)
        log.close()


@dataclass
class Segment:
    rollups: bool
    cpu: Cpu
    start: datetime
    end: datetime
    checks: int = 0

    @property
    def core_seconds(self) -> float:
        return self.cpu.core("worker", "temporal", "postgres") / 100 * self.cpu.seconds


async def monitoring(
    engine: Engine,
    settings: Settings,
    tmp: Path,
    rounds: int,
    seconds: float,
    since: datetime,
    *,
    first_check_in: float = 8.0,
    settle: float = 10.0,
) -> tuple[bool, list[Segment]]:
    """Rollups on and off in turns (ABBA) on a running worker; `first_check_in` seconds from now the first checks
    are due, and the segments start `settle` seconds after the first is stored (--smoke: shorter, no figure)."""
    with engine.connect() as conn:
        idx = list(conn.execute(text("SELECT id, enabled FROM services ORDER BY id")).all())
    enabled = sum(1 for _, on in idx if on)
    switch = tmp / "rollups-off"
    with target_process(len(idx), len(idx)) as targets:
        ports = json.loads(await read_line(targets, "the targets' process"))
        with session_scope(engine) as session:
            session.execute(
                text("UPDATE services SET config = jsonb_set(config, '{check,url}', to_jsonb(CAST(:url AS text))) "
                     "WHERE id = :id"),
                [{"id": sid, "url": f"http://127.0.0.1:{ports[n]}/t/{n}"} for n, (sid, _) in enumerate(idx)],
            )  # fmt: skip
            # Everyone up, first checks spread over the first interval from a few seconds on (steady at once).
            session.execute(
                text("UPDATE service_states SET status = 'up', consecutive_failures = 0, failing_since = NULL, "
                     "incident_id = NULL, next_check_at = now() + :first * interval '1 second' "
                     "+ (abs(hashint8(service_id)) % 60000) * interval '1 millisecond'"),
                {"first": first_check_in},
            )  # fmt: skip
        started = datetime.now(UTC)
        with switched_worker(settings, tmp, switch) as worker:
            deadline = time.monotonic() + 180
            while True:
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with {worker.returncode}:\n{worker_log(tmp)}")
                with engine.connect() as conn:
                    seen = conn.execute(
                        text("SELECT count(*) FROM uptime_metrics WHERE checked_at >= :t"), {"t": started}
                    ).scalar_one()
                if seen:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no check stored 180 s after the worker started:\n{worker_log(tmp)}")
                await asyncio.sleep(1)
            await asyncio.sleep(settle)  # the worker's first ticks and the first interval's burst behind
            groups = {"worker": [psutil.Process(worker.pid)], "temporal": [temporal_server()],
                      "postgres": [postmaster(engine)]}  # fmt: skip
            segments: list[Segment] = []
            for n in range(rounds):
                order = (True, False) if n % 2 == 0 else (False, True)  # ABBA: drift cancels out
                for on in order:
                    if on:
                        switch.unlink(missing_ok=True)
                    else:
                        switch.touch()
                    await asyncio.sleep(2)  # flushes in flight finish under the old setting
                    start = datetime.now(UTC)
                    cpu = await measure_cpu(groups, seconds)
                    segments.append(Segment(on, cpu, start, datetime.now(UTC)))
            switch.unlink(missing_ok=True)
            await asyncio.sleep(TIMEOUT_SECONDS + 2)  # the last segment's results reach the table
            with engine.connect() as conn:
                for seg in segments:
                    seg.checks = conn.execute(
                        text("SELECT count(*) FROM uptime_metrics WHERE checked_at >= :a AND checked_at < :b"),
                        {"a": seg.start, "b": seg.end},
                    ).scalar_one()
                # The generated data end at `since` (the load's now): what is after it is the worker's.
                stored = conn.execute(
                    text("SELECT count(*) FROM uptime_metrics WHERE scheduled_at >= :t"), {"t": since}
                ).scalar_one()
                counted = conn.execute(
                    text("SELECT coalesce(sum(checks), 0) FROM uptime_rollups_minute WHERE bucket >= :t"), {"t": since}
                ).scalar_one()
            log = worker_log(tmp)
            errors = [ln for ln in log.splitlines() if "ERROR" in ln or "Traceback" in ln]
            last = log[log.rfind("Traceback") :][:1500] if "Traceback" in log else ""
    print(
        f"monitoring: {enabled} enabled services checked every 60 s by `agent-monitor worker` (pid {worker.pid}; "
        f"targets: bench.monitoring's, not counted), {rounds} rounds of {seconds:g} s with rollups on and off "
        f"(ABBA order); CPU = worker + Temporal + Postgres; {CPUS} CPUs"
    )
    print(f"  results stored since the worker started: {stored}; counted in the minute rollups: {counted} "
          f"(the 'off' segments' checks are not: the switch works)")  # fmt: skip
    if errors:
        print(f"  worker log: {len(errors)} error line(s), the first: {errors[0][:300]}\n{last}")
    for seg in segments:
        ms = seg.core_seconds / max(1, seg.checks) * 1000
        g = seg.cpu.groups
        print(
            f"    rollups {'on ' if seg.rollups else 'off'}: {seg.checks:5d} checks in {seg.cpu.seconds:4.0f} s, "
            f"{seg.cpu.core('worker', 'temporal', 'postgres'):5.1f} % of one core (worker {g['worker']:.1f}"
            f" + Temporal {g['temporal']:.1f} + Postgres {g['postgres']:.1f}), {ms:.2f} ms "
            f"CPU per check; machine busy {seg.cpu.machine:.0f} %"
        )
    figures = {}
    for on in (True, False):
        chosen = [s for s in segments if s.rollups == on]
        cpu_s = sum(s.core_seconds for s in chosen)
        wall = sum(s.cpu.seconds for s in chosen)
        checks = sum(s.checks for s in chosen)
        figures[on] = (cpu_s / max(1, checks) * 1000, cpu_s / wall * 100, checks)
    (on_ms, on_pct, on_n), (off_ms, off_pct, off_n) = figures[True], figures[False]
    ratio = on_ms / off_ms if off_ms else float("inf")
    print(f"  with rollups maintained: {on_ms:.2f} ms CPU per check, {on_pct:.1f} % of one core ({on_n} checks)")
    print(f"  without (today's bench.monitoring path): {off_ms:.2f} ms CPU per check, {off_pct:.1f} % of one core "
          f"({off_n} checks)")  # fmt: skip
    ok = ratio <= TARGET_CPU_RATIO
    print(
        f"  target monitoring CPU with rollups <= {TARGET_CPU_RATIO * 100 - 100:.0f} % above without: "
        f"{(ratio - 1) * 100:+.1f} % {met(ok)}"
    )
    return ok, segments
