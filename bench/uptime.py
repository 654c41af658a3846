"""Uptime at scale (issue 21): N services × D days of 60-second checks and their incidents, loaded as the rollups the
product keeps, read warm through a real `agent-monitor web` on 127.0.0.1; then the monitoring path's CPU with the
rollups maintained and without, in the same run (bench/uptime_monitoring.py).

The data (bench/uptime_data.py) are the rollups, not ~130 M raw results: minute rows for the minute retention
(UPTIME_MINUTE_RETENTION_DAYS, by default UPTIME_RETENTION_DAYS = 30 days), hour and day rows for all D days, built
from per-check rows by the monitor's own upsert. That the write path gives the same rows is checked in the run: a
sample of services' last hours goes through the write path itself (raw results stored, activities/monitoring/rollups
add_results / add_silenced, one flush a minute) and their rollups are compared row by row with the generator's.

Reads, each warmed first, one request at a time (ms, p50 / p95 / max): the services page, its live refresh, a
service's page, the all-services graph as the services page opens it (24 h) and at 30 days, one service's 1-year
graph and CSV, all services' 30-day CSV (step auto, and hourly rows; the web's RSS while it streams); then, in-process,
where the services page's availability and the all-services graph spend their time.

    python -m bench.uptime [--services 1000] [--days 90] [--incidents 5000] [--runs 20] [--jobs 2]
    python -m bench.uptime --quick      # 100 services × 30 days, 500 incidents, shorter segments: about 3 minutes
    python -m bench.uptime --smoke      # 20 services × 3 days: that it runs and prints every line (tests/bench)
Targets: pages p95 ≤ 300 ms, a 1-year graph ≤ 100 ms, a 1-year CSV ≤ 1 s, monitoring CPU with rollups ≤ 110 % of
without. The full run took 16 minutes on 2 shared cores (10 of them loading 43 M minute rows).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from contextlib import AsyncExitStack
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
from bench.local_stack import local_stack
from bench.machine import machine_line
from bench.monitoring import CPUS, pct
from bench.uptime_data import Plan, load, write_path_check
from bench.uptime_monitoring import met, monitoring, run_worker_with_switch
from core.audit import SYSTEM
from core.db import session_scope
from core.monitoring import ROLLUP_TABLES
from core.settings import Settings
from core.uptime import Period
from services import uptime
from services.identity import create_token, create_user
from services.uptime import availability_by_service

TARGET_PAGE_P95_MS = 300.0
TARGET_GRAPH_MS = 100.0
TARGET_CSV_MS = 1000.0
ROOT = Path(__file__).resolve().parent.parent


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
    note: str = ""

    def line(self) -> str:
        s = self.samples
        return f"p50 {pct(s, 50):7.1f}  p95 {pct(s, 95):7.1f}  max {max(s):7.1f}"


def rss_mib(pid: int) -> float:
    root = psutil.Process(pid)
    return float(sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])) / 2**20


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
    return Timing(samples, len(body), body.count(b"\n"), peak - before, served_by(body))


def served_by(body: bytes) -> str:
    """The step (and rollup) an uptime answer was read at: step=auto picks it by range and number of services."""
    if body.startswith(b"# "):
        found = re.search(rb"step=(\S+)", body[:300])
        return f"step {found.group(1).decode()}" if found else ""
    if body.startswith(b"{"):
        answer = json.loads(body)
        if "step" in answer:
            return f"step {answer['step']} from the {answer['resolution']} rollup, {len(answer['points'])} points"
    return ""


def cases(name: str, runs: int) -> list[Case]:
    page, graph, csv = "page p95 <= 300 ms", "1-year graph p95 <= 100 ms", "1-year CSV p95 <= 1 s"
    heavy = max(2, min(runs, 5))
    streamed = "no time target in issue 21; streamed: web RSS grows < half the download"
    return [
        Case("/services (the services page)", "/services", TARGET_PAGE_P95_MS, page, runs),
        Case("/services/_rows (its live refresh)", "/services/_rows", TARGET_PAGE_P95_MS, page, runs),
        Case(f"/services/{name} (one service's page)", f"/services/{name}", TARGET_PAGE_P95_MS, page, runs),
        Case("/api/uptime?range=24h&per_service=false (services page graph, opening)",
             "/api/uptime?range=24h&per_service=false", TARGET_PAGE_P95_MS, page + " (the page's own graph)", runs),
        Case("/api/uptime?range=30d&per_service=false (the services page's graph at 30 d)",
             "/api/uptime?range=30d&per_service=false", TARGET_PAGE_P95_MS, page + " (the page's graph at 30 d)",
             runs),
        Case("/api/uptime?range=24h (the API with each service's summary and status)", "/api/uptime?range=24h", None,
             "no target: the API's full answer, every service's figures", heavy),
        Case("/api/uptime?range=30d (the same over 30 days)", "/api/uptime?range=30d", None,
             "no target: the API's full answer, every service's figures", heavy),
        Case(f"/api/services/{name}/uptime?range=1y (1-year graph)", f"/api/services/{name}/uptime?range=1y",
             TARGET_GRAPH_MS, graph, runs),
        Case(f"/api/services/{name}/uptime.csv?range=1y (1-year CSV)", f"/api/services/{name}/uptime.csv?range=1y",
             TARGET_CSV_MS, csv, runs),
        Case("/api/uptime.csv?range=30d (all services, monthly CSV, step auto)", "/api/uptime.csv?range=30d", None,
             streamed, heavy),
        Case("/api/uptime.csv?range=30d&step=1h (all services, monthly CSV, hourly rows)",
             "/api/uptime.csv?range=30d&step=1h", None, streamed, max(2, min(runs, 3))),
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


COUNTS_ONLY = """
SELECT date_bin(CAST(:step AS interval), bucket, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS t, sum(checks), sum(up),
       sum(degraded), sum(down), sum(maintenance), sum(latency_count), max(latency_max), max(updated_at)
FROM {table} WHERE service_id = ANY(CAST(:ids AS bigint[])) AND bucket >= :start AND bucket < :end GROUP BY 1
"""
ROWS_IN = """
SELECT count(*) FROM {table} WHERE service_id = ANY(CAST(:ids AS bigint[])) AND bucket >= :start AND bucket < :end
"""


def _windows(end: datetime, days: int) -> dict[str, datetime]:
    start = end - timedelta(days=days)
    day_lo = start.replace(hour=0, minute=0, second=0, microsecond=0)
    day_lo += timedelta(days=1) if day_lo < start else timedelta(0)
    day_hi = end.replace(hour=0, minute=0, second=0, microsecond=0)
    return {"start": start, "end": end, "day_lo": day_lo, "day_hi": max(day_lo, day_hi)}


def _timer(runs: int) -> Any:
    def timed(fn: Any) -> tuple[float, Any]:
        fn()
        samples, result = [], None
        for _ in range(runs):
            started = time.perf_counter()
            result = fn()
            samples.append((time.perf_counter() - started) * 1000)
        return statistics.median(samples), result

    return timed


def overview_breakdown(engine: Engine, settings: Settings, runs: int) -> None:
    """In-process: the all-services graph (services/uptime.group_uptime, step auto as the API picks it) at 24 h and
    30 d, warm (its past points from services/uptime.SETTLED) and with its past read again, and its parts; its points
    also without the latency histograms' merge."""
    timed = _timer(runs)
    with Session(engine) as session:
        rows = list(session.execute(text("SELECT id, name FROM services ORDER BY id")).all())
        ids, names = [r[0] for r in rows], [r[1] for r in rows]
        conn = session.connection()
        for range_ in ("24h", "30d"):
            span = uptime.resolve_period(settings=settings, range_=range_, step="auto", end=None, services=len(ids))
            table = ROLLUP_TABLES[span.resolution]
            params = {"step": span.step_delta, "ids": ids, "start": span.start, "end": span.end}
            whole, _ = timed(lambda span=span: uptime.group_uptime(session=session, span=span))

            def cold(span: Period = span) -> object:
                uptime.SETTLED.clear()  # as on the first request after a step boundary, in a fresh process
                return uptime.group_uptime(session=session, span=span)

            first, _ = timed(cold)
            graph, _ = timed(lambda span=span: uptime.graph(conn, service_ids=ids, span=span, with_totals=True))
            chosen, _ = timed(lambda: uptime.chosen_services(session, group=None, names=()))
            points, _ = timed(lambda span=span: uptime.series(conn, service_ids=ids, span=span))
            counts, _ = timed(lambda t=table, p=params: conn.execute(text(COUNTS_ONLY.format(table=t)), p).all())
            totals, _ = timed(lambda span=span: uptime.per_service(conn, service_ids=ids, span=span))
            markers, _ = timed(
                lambda span=span: uptime.incident_markers(
                    conn, names=names, span=span, filters=uptime.IncidentFilter(), now=datetime.now(UTC)
                )
            )
            n = conn.execute(text(ROWS_IN.format(table=table)), params).scalar_one()
            print(
                f"  group_uptime {range_:>3} (step {span.step}, {n:,} {span.resolution} rows): {whole:.1f} ms "
                f"(its past merged already; with the past read again {first:.1f}); parts: chosen_services "
                f"{chosen:.1f} | graph {graph:.1f} | uncached: series {points:.1f} (without the histogram merge "
                f"{counts:.1f}), per_service {totals:.1f} | incident_markers {markers:.1f}"
            )


def availability_breakdown(engine: Engine, runs: int) -> None:
    """In-process: the services page's availability_by_service (all services, 24 h / 7 d / 30 d) and each range's
    query alone; the same 7 d / 30 d figures from day rollups + edge hours, checked equal."""
    timed = _timer(runs)
    with Session(engine) as session:
        ids = list(session.execute(text("SELECT id FROM services ORDER BY id")).scalars())
        now = datetime.now(UTC)
        end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)

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
                note = f"; {timing.note}" if timing.note else ""
                print(f"  {case.label:<72} {timing.line()}  ({case.runs} runs)\n      {text_}{note}")
        tracebacks = (tmp / "web.log").read_text(errors="replace").count("Traceback")
        if tracebacks:
            print(f"  web log: {tracebacks} tracebacks (see {tmp / 'web.log'})")
    print("where the time goes (in-process, same data, medians):")
    availability_breakdown(engine, max(3, runs // 2))
    overview_breakdown(engine, settings, max(3, runs // 4))
    return verdicts


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
                engine, settings, tmp, options.monitor_rounds, options.segment_seconds, plan.now,
                first_check_in=2.0 if options.smoke else 8.0, settle=1.0 if options.smoke else 10.0,
            )  # fmt: skip
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
    parser.add_argument(
        "--smoke", action="store_true", help="20 services × 3 days, 20 incidents, 2 runs, 1 short round: that it runs"
    )
    parser.add_argument("--role", choices=["main", "worker"], default="main", help=argparse.SUPPRESS)
    parser.add_argument("--switch", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.role == "worker":
        run_worker_with_switch(Path(options.switch))
        sys.exit(0)
    if options.quick:
        options.services, options.days, options.incidents = 100, 30, 500
        options.runs, options.monitor_rounds, options.segment_seconds = 10, 2, 15
    if options.smoke:  # the test suite's: every line printed, no figure worth reading
        options.services, options.days, options.incidents, options.sample_hours = 20, 3, 20, 1
        options.runs, options.monitor_rounds, options.segment_seconds = 2, 1, 5
    if not (20 <= options.services and 1 <= options.days <= 730 and options.incidents >= 10 and options.runs >= 1):
        parser.error("--services >= 20, 1 <= --days <= 730, --incidents >= 10, --runs >= 1")
    if not 0 < options.sample_hours * 60 <= options.days * 1440 - 240:
        parser.error("--sample-hours must be positive and well inside --days")
    signal.signal(signal.SIGTERM, _terminate)  # cleanup runs for `kill` as for Ctrl-C
    try:
        print(machine_line(), flush=True)
        code = asyncio.run(main(options))
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    os._exit(code)  # a Client's interpreter exit can abort (shared/DESIGN.md)
