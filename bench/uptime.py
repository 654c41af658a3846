"""Uptime at scale (issue 21): N services × D days of 60-second checks and their incidents, loaded as the rollups the
product keeps, read warm through a real `agent-monitor web` on 127.0.0.1; then the monitoring path's CPU with the
rollups maintained and without, in the same run.

The data (bench/uptime_data.py) are the rollups, not ~130 M raw results: minute rows for the minute retention
(UPTIME_MINUTE_RETENTION_DAYS, by default UPTIME_RETENTION_DAYS = 30 days), hour and day rows for all D days, built
from per-check rows by the monitor's own upsert. That the write path gives the same rows is checked in the run: a
sample of services' last hours goes through the write path itself (raw results stored, activities/monitoring/rollups
add_results / add_silenced, one flush a minute) and their rollups are compared row by row with the generator's.

Reads, each warmed first, one request at a time (ms, p50 / p95 / max): the services page, its live refresh, a
service's page, the all-services graph as the services page opens it (24 h) and at 30 days, one service's 1-year
graph, one service's 1-year CSV and all services' 30-day CSV (hourly rows; the web's RSS while it streams).

Monitoring: the generated services pointed at local HTTP targets (bench/monitoring.py's), checked every 60 s by the
real `agent-monitor worker`, in alternating segments with the rollup writes on and off (a bench-only wrapper replaces
rollups.add_results / add_silenced with versions that skip while a switch file exists; the product has no such
setting). CPU (worker + Temporal + Postgres, as bench.monitoring counts it) per check, on vs off.

    python -m bench.uptime [--services 1000] [--days 90] [--incidents 5000] [--runs 20] [--jobs 2]
    python -m bench.uptime --quick      # 100 services × 30 days, 500 incidents, shorter segments: a few minutes
Targets: pages p95 ≤ 300 ms, a 1-year graph ≤ 100 ms, a 1-year CSV ≤ 1 s, monitoring CPU with rollups ≤ 110 % of
without. The full run takes about half an hour on 2 shared cores (most of it loading 43 M minute rows).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import Engine, text
from sqlmodel import Session

from bench.load import child as app_child
from bench.load import free_port, stack_env, wait_ready, web_argv
from bench.local_stack import local_stack, stop_process
from bench.monitoring import (
    CPUS,
    TIMEOUT_SECONDS,
    Cpu,
    child,
    measure_cpu,
    pct,
    postmaster,
    read_line,
    target_process,
    temporal_server,
    worker_log,
)
from bench.uptime_data import Plan, load, write_path_check
from core.audit import SYSTEM
from core.db import session_scope
from core.monitoring import ROLLUP_TABLES
from core.settings import Settings
from services.identity import create_token, create_user
from services.uptime import availability_by_service

TARGET_PAGE_P95_MS = 300.0
TARGET_GRAPH_MS = 100.0
TARGET_CSV_MS = 1000.0
TARGET_CPU_RATIO = 1.10
ROOT = Path(__file__).resolve().parent.parent


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


# ---- reads ----------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    label: str
    path: str
    target_ms: float | None  # on p95
    target_name: str
    runs: int


@dataclass
class Timing:
    samples: list[float]
    size: int  # bytes of the last answer
    lines: int
    rss_growth_mib: float | None = None

    def line(self) -> str:
        s = self.samples
        return f"p50 {pct(s, 50):7.1f}  p95 {pct(s, 95):7.1f}  max {max(s):7.1f}"


def rss_mib(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


async def time_case(client: httpx.AsyncClient, case: Case, web_pid: int, warm: int = 2) -> Timing:
    """Warm-up requests, then `runs` timed ones (the whole body read); the web's RSS sampled while they run."""
    for _ in range(warm):
        (await client.get(case.path)).raise_for_status()
    peak = before = rss_mib(web_pid)
    done = threading.Event()

    def sample_rss() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, rss_mib(web_pid))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    samples = []
    body = b""
    try:
        for _ in range(case.runs):
            started = time.perf_counter()
            response = await client.get(case.path)
            body = response.content
            samples.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    finally:
        done.set()
        sampler.join()
    return Timing(samples, len(body), body.count(b"\n"), peak - before)


def cases(name: str, runs: int) -> list[Case]:
    page, graph, csv = "page p95 <= 300 ms", "1-year graph p95 <= 100 ms", "1-year CSV p95 <= 1 s"
    heavy = max(2, min(runs, 5))
    return [
        Case("/services (the services page)", "/services", TARGET_PAGE_P95_MS, page, runs),
        Case("/services/_rows (its live refresh)", "/services/_rows", TARGET_PAGE_P95_MS, page, runs),
        Case(f"/services/{name} (one service's page)", f"/services/{name}", TARGET_PAGE_P95_MS, page, runs),
        Case("/api/uptime?range=24h (services page graph, opening)", "/api/uptime?range=24h", TARGET_PAGE_P95_MS,
             page + " (the page's own graph)", runs),
        Case("/api/uptime?range=30d (all services, 30-day overview)", "/api/uptime?range=30d", TARGET_PAGE_P95_MS,
             page + " (the services page's graph at 30 d)", runs),
        Case(f"/api/services/{name}/uptime?range=1y (1-year graph)", f"/api/services/{name}/uptime?range=1y",
             TARGET_GRAPH_MS, graph, runs),
        Case(f"/api/services/{name}/uptime.csv?range=1y (1-year CSV)", f"/api/services/{name}/uptime.csv?range=1y",
             TARGET_CSV_MS, csv, runs),
        Case("/api/uptime.csv?range=30d (all services, monthly CSV, hourly rows)", "/api/uptime.csv?range=30d", None,
             "no time target in issue 21; streamed: web RSS grows < half the download", heavy),
        Case("/api/uptime.csv?range=30d&step=1d (all services, monthly CSV, daily rows)",
             "/api/uptime.csv?range=30d&step=1d", None, "no time target in issue 21", heavy),
    ]  # fmt: skip


def verdict_of(case: Case, timing: Timing) -> tuple[str, bool | None]:
    if case.target_ms is not None:
        ok = pct(timing.samples, 95) <= case.target_ms
        return f"target {case.target_name}: {pct(timing.samples, 95):.1f} ms {met(ok)}", ok
    if timing.rss_growth_mib is not None and "streamed" in case.target_name:
        ok = timing.rss_growth_mib < timing.size / 2**20 / 2
        return (
            f"{case.target_name}: {timing.size / 2**20:.1f} MB, {timing.lines} lines, web RSS +"
            f"{timing.rss_growth_mib:.1f} MB {met(ok)}",
            ok,
        )
    return f"{case.target_name} ({timing.size / 2**20:.1f} MB, {timing.lines} lines)", None


# The services page's availability (services/uptime.availability_by_service) and, to compare, the same windows read
# from the day rollups for their whole days and the hour rollups only at their edges.
HOURS_ONLY = """
SELECT service_id, sum(checks), sum(up), sum(degraded), sum(maintenance) FROM uptime_rollups_hour
WHERE service_id = ANY(CAST(:ids AS bigint[])) AND bucket >= :start AND bucket < :end GROUP BY 1
"""
DAYS_AND_EDGES = """
SELECT service_id, sum(checks), sum(up), sum(degraded), sum(maintenance) FROM (
  SELECT service_id, checks, up, degraded, maintenance FROM uptime_rollups_day
  WHERE service_id = ANY(CAST(:ids AS bigint[])) AND bucket >= :day_lo AND bucket < :day_hi
  UNION ALL
  SELECT service_id, checks, up, degraded, maintenance FROM uptime_rollups_hour
  WHERE service_id = ANY(CAST(:ids AS bigint[]))
    AND ((bucket >= :start AND bucket < :day_lo) OR (bucket >= :day_hi AND bucket < :end))
) t GROUP BY 1
"""


def _windows(end: datetime, days: int) -> dict[str, datetime]:
    start = end - timedelta(days=days)
    day_lo = start.replace(hour=0, minute=0, second=0, microsecond=0)
    day_lo += timedelta(days=1) if day_lo < start else timedelta(0)
    day_hi = end.replace(hour=0, minute=0, second=0, microsecond=0)
    return {"start": start, "end": end, "day_lo": day_lo, "day_hi": max(day_lo, day_hi)}


def availability_breakdown(engine: Engine, runs: int) -> None:
    """In-process: the services page's availability_by_service (all services, 24 h / 7 d / 30 d) and each range's
    query alone; the same 7 d / 30 d figures from day rollups + edge hours, checked equal."""
    with Session(engine) as session:
        ids = list(session.execute(text("SELECT id FROM services ORDER BY id")).scalars())
        now = datetime.now(UTC)
        end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)

        def timed(fn: Any) -> tuple[float, Any]:
            fn()
            samples, result = [], None
            for _ in range(runs):
                started = time.perf_counter()
                result = fn()
                samples.append((time.perf_counter() - started) * 1000)
            return statistics.median(samples), result

        whole, _ = timed(lambda: availability_by_service(session=session, service_ids=ids, now=now))
        print(f"  availability_by_service, {len(ids)} services, 24h+7d+30d from hour rollups: median {whole:.1f} ms")
        conn = session.connection()
        for range_, days in (("24h", 1), ("7d", 7), ("30d", 30)):
            w = _windows(end, days)
            hours, a = timed(lambda w=w: sorted(conn.execute(text(HOURS_ONLY), {"ids": ids, **w}).all()))
            mixed, b = timed(lambda w=w: sorted(conn.execute(text(DAYS_AND_EDGES), {"ids": ids, **w}).all()))
            rows = conn.execute(
                text("SELECT count(*) FROM uptime_rollups_hour WHERE service_id = ANY(CAST(:ids AS bigint[])) "
                     "AND bucket >= :start AND bucket < :end"), {"ids": ids, **w}
            ).scalar_one()  # fmt: skip
            print(
                f"    {range_:>3}: hour rollups only {hours:6.1f} ms ({rows} rows) | day rollups + edge hours "
                f"{mixed:6.1f} ms, same figures: {'yes' if a == b else 'NO'}"
            )


async def reads(settings: Settings, tmp: Path, engine: Engine, runs: int) -> list[bool | None]:
    with session_scope(engine) as session:
        admin = create_user(session=session, actor=SYSTEM, username="bench", role="admin", password=None)
        token, _ = create_token(session=session, actor=SYSTEM, user=admin, name="bench")
        name = session.execute(
            text("SELECT i.service FROM incidents i JOIN services s ON s.name = i.service AND s.enabled "
                 "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")
        ).scalar_one()  # fmt: skip
    port = free_port()
    env = stack_env(settings, tmp, WEB_HOST="127.0.0.1", WEB_PORT=str(port))
    verdicts: list[bool | None] = []
    with app_child(web_argv("ours", 1, port), env, tmp, "web") as web:
        base = f"http://127.0.0.1:{port}"
        wait_ready(web, f"{base}/readyz", tmp / "web.log")
        print(
            f"reads: `agent-monitor web` (1 process, pid {web.pid}) over real HTTP on 127.0.0.1, one request at a "
            f"time, each case warmed twice first; ms; service {name} is the one with the most incidents"
        )
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
            for case in cases(name, runs):
                timing = await time_case(client, case, web.pid)
                text_, ok = verdict_of(case, timing)
                verdicts.append(ok)
                print(f"  {case.label:<72} {timing.line()}  ({case.runs} runs)\n      {text_}")
        tracebacks = (tmp / "web.log").read_text(errors="replace").count("Traceback")
        if tracebacks:
            print(f"  web log: {tracebacks} tracebacks (see {tmp / 'web.log'})")
    print("where the services page's time goes (in-process, same data):")
    availability_breakdown(engine, max(3, runs // 2))
    return verdicts


# ---- monitoring CPU, rollups on / off -------------------------------------------------------------------------------


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
    engine: Engine, settings: Settings, tmp: Path, rounds: int, seconds: float, since: datetime
) -> tuple[bool, list[Segment]]:
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
                     "incident_id = NULL, next_check_at = now() + interval '8 seconds' "
                     "+ (abs(hashint8(service_id)) % 60000) * interval '1 millisecond'")
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
            await asyncio.sleep(10)  # the worker's first ticks and the first interval's burst behind
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


# ---- main -----------------------------------------------------------------------------------------------------------


def table_sizes(engine: Engine) -> str:
    parts = []
    with engine.connect() as conn:
        for unit, table in ROLLUP_TABLES.items():
            rows, size = conn.execute(
                text(f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}")  # noqa: S608 (our names)
            ).one()
            parts.append(f"{unit} {rows:,} rows ({size / 2**20:,.0f} MB)")
        incidents = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
        windows = conn.execute(text("SELECT count(*) FROM maintenance_windows")).scalar_one()
    return f"{', '.join(parts)}; {incidents:,} incidents, {windows} maintenance windows"


async def main(options: argparse.Namespace) -> int:
    wall = time.monotonic()
    async with AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="am-bench-uptime-")))
        monitor_id = f"bench-monitor-{uuid.uuid4().hex[:8]}"
        local = await stack.enter_async_context(
            local_stack("bench-uptime", monitor_workflow_id=monitor_id, embedding_provider="off")
        )
        engine, settings = local.engine, local.settings
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        plan = Plan(options.services, options.days, options.incidents, now, settings.uptime_kept_days()["minute"],
                    options.sample_hours)  # fmt: skip
        print(
            f"{plan.services} services × {plan.days} days of 60-second checks (~{plan.services * plan.days * 1440:,} "
            f"checks), {plan.incidents} incidents; loaded as rollups: minute rows for the last "
            f"{min(plan.minute_days, plan.days)} days (the minute retention), hour and day rows for all {plan.days}; "
            f"{options.jobs} loaders; {CPUS} CPUs"
        )
        sample, took = await asyncio.to_thread(load, engine, plan, options.jobs)
        print(f"loaded in {took:.0f} s (incl. VACUUM ANALYZE): {table_sizes(engine)}")
        check = await asyncio.to_thread(write_path_check, engine, plan, sample)
        c, up, degraded, down, maintenance = check.checks
        rows = ", ".join(f"{unit} {total - diff}/{total}" for unit, (total, diff) in check.rows.items())
        print(
            f"write path check: {check.services} services' last {check.hours:g} h ({c} checks: {up} up, {degraded} "
            f"degraded, {down} down, {maintenance} in maintenance) through the monitor's write path (raw results + "
            f"rollups.add_results, add_silenced for silenced checks, a flush a minute) in {check.seconds:.1f} s; "
            f"their rollups over all {plan.days} days equal the generator's, row for row: {rows} "
            f"{'(identical)' if check.equal else '— DIFFERENT: the generated data are not what the product writes'}"
        )
        verdicts = await reads(settings, tmp, engine, options.runs)
        if options.monitor_rounds:
            cpu_ok, _ = await monitoring(
                engine, settings, tmp, options.monitor_rounds, options.segment_seconds, plan.now
            )
            verdicts.append(cpu_ok)
    print(f"done in {(time.monotonic() - wall) / 60:.1f} min; targets: {sum(v is True for v in verdicts)} met, "
          f"{sum(v is False for v in verdicts)} not met")  # fmt: skip
    return 0 if check.equal else 1


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--incidents", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=20, help="timed requests per read case (the heavy CSVs: 5)")
    parser.add_argument("--jobs", type=int, default=2, help="loading connections at once")
    parser.add_argument("--sample-hours", type=float, default=3, help="hours the write path check covers")
    parser.add_argument("--monitor-rounds", type=int, default=4, help="rollups on/off rounds; 0: no monitoring part")
    parser.add_argument("--segment-seconds", type=float, default=30, help="seconds of each on or off segment")
    parser.add_argument("--quick", action="store_true", help="100 services × 30 days, 500 incidents, 10 runs, 2 rounds")
    parser.add_argument("--role", choices=["main", "worker"], default="main", help=argparse.SUPPRESS)
    parser.add_argument("--switch", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.role == "worker":
        run_worker_with_switch(Path(options.switch))
        sys.exit(0)
    if options.quick:
        options.services, options.days, options.incidents = 100, 30, 500
        options.runs, options.monitor_rounds, options.segment_seconds = 10, 2, 15
    if not (20 <= options.services and 1 <= options.days <= 730 and options.incidents >= 10 and options.runs >= 1):
        parser.error("--services >= 20, 1 <= --days <= 730, --incidents >= 10, --runs >= 1")
    if not 0 < options.sample_hours * 60 <= options.days * 1440 - 240:
        parser.error("--sample-hours must be positive and well inside --days")
    signal.signal(signal.SIGTERM, _terminate)  # cleanup runs for `kill` as for Ctrl-C
    try:
        code = asyncio.run(main(options))
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    os._exit(code)  # a Client's interpreter exit can abort (shared/DESIGN.md)
