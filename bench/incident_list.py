"""The incident list at 100,000 incidents (--incidents 1000000: a million): p50/p95 of `search_incidents` (the
capped count + one page of 50) and of GET /api/incidents (in-process ASGI: validation, query, serialisation) for
the pages people open, on a private embedded Postgres.

    make bench            # or: python -m bench.incident_list --incidents 100000 --runs 50
Target: p95 ≤ 50 ms per page; a slower case prints its EXPLAIN ANALYZE.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import event, text
from sqlmodel import Session

from app.main import create_app
from bench.machine import machine_line
from core.audit import SYSTEM
from core.db import EmbeddedPostgres, make_engine, run_migrations, session_scope
from core.settings import Settings
from services.identity import create_token, create_user
from services.incidents.query import IncidentFilter, search_incidents

TARGET_P95_MS = 50.0
PAGE = 50
DEEP_PAGES = 20
USERS = 20
TEAMS = 5

# Deterministic (setseed) and skewed like real data: most incidents are old and closed, P3/P4 dominate,
# a few services are noisy; titles repeat with variations, so a text search finds hundreds, not all.
SEED_INCIDENTS = """
WITH r AS (
    SELECT i, random() AS a, random() AS b, random() AS c, random() AS d, random() AS e
    FROM generate_series(1, :n) AS i
), v AS (
    SELECT i, a, b, c, d, e,
        (ARRAY['Checkout latency above SLO', 'Database connection pool exhausted', 'Disk usage above 90%',
               'TLS certificate expires in 7 days', 'Error rate spike on /api/orders', 'Health check failing',
               'Memory usage climbing after deploy', 'Queue backlog growing', 'Replica lag above 30 s',
               'Payment provider timeouts', 'Pod crash loop', 'DNS resolution errors'])[1 + floor(a * 12)::int]
            AS title,
        'svc-' || floor(power(b, 2) * 60)::int AS service,
        CASE WHEN c < 0.05 THEN 'P1' WHEN c < 0.20 THEN 'P2' WHEN c < 0.70 THEN 'P3' ELSE 'P4' END AS severity,
        -- Recent incidents are the open ones.
        CASE WHEN i > :n - 500 AND d < 0.5 THEN 'open'
             WHEN i > :n - 2000 AND d < 0.3 THEN 'in_progress'
             WHEN d < 0.01 THEN 'reopened'
             WHEN d < 0.25 THEN 'resolved'
             ELSE 'closed' END AS status,
        now() - (:n - i) * interval '5 minutes' AS created_at
    FROM r
)
INSERT INTO incidents (title, description, service, service_url, severity, status, incident_type, playbook_id,
    playbook_version, workflow_id, workflow_runs, assignee_user_id, assignee_team_id, idempotency_key,
    created_at, updated_at, resolved_at, acknowledged_at, closed_at)
SELECT title || ' #' || i,
    'Alert from ' || (ARRAY['prometheus', 'datadog', 'uptime', 'manual'])[1 + i % 4] || ' on ' || service
        || '. Runbook: check the dashboards, recent deploys and upstream dependencies.',
    service, CASE WHEN e < 0.5 THEN 'http://' || service || '.internal/healthz' END,
    severity, status,
    (ARRAY['default', 'latency', 'availability', 'capacity', 'security', 'data', 'deploy', 'network'])
        [1 + floor(e * 8)::int],
    'default', 1, 'incident-' || i, 1,
    CASE WHEN e < 0.6 THEN 1 + floor(e * 1000)::int % :users END,
    CASE WHEN b < 0.4 THEN 1 + floor(b * 1000)::int % :teams END,
    NULL, created_at, created_at + (e * 3000) * interval '1 minute',
    CASE WHEN status IN ('resolved', 'closed') THEN created_at + interval '2 hours' END,
    CASE WHEN status <> 'open' THEN created_at + interval '10 minutes' END,
    CASE WHEN status = 'closed' THEN created_at + interval '1 day' END
FROM v
"""

CASES: list[tuple[str, dict[str, Any], str]] = [
    ("first page, newest", {}, "newest"),
    ("status open+in_progress", {"status": ["open", "in_progress"]}, "newest"),
    ("status closed", {"status": ["closed"]}, "newest"),
    ("sort severity", {}, "severity"),
    ("sort updated", {}, "updated"),
    ("q=pool (~1/12 of rows)", {"q": "pool"}, "newest"),
    ("q=#4242 (a few rows)", {"q": "#4242"}, "newest"),
    ("service=svc-3", {"service": "svc-3"}, "newest"),
    ("open+in_progress, P1+P2, by severity", {"status": ["open", "in_progress"], "severity": ["P1", "P2"]}, "severity"),
    ("assignee 7, not closed, by updated", {"assignee_user_id": 7, "status": ["open", "in_progress"]}, "updated"),
    ("unassigned, open, newest", {"unassigned": True, "status": ["open"]}, "newest"),
    ("severity P1, type latency", {"severity": ["P1"], "incident_type": "latency"}, "newest"),
    ("q=disk + status resolved", {"q": "disk", "status": ["resolved"]}, "newest"),
]
DEEP_CASES = [("20 pages deep, newest", "newest"), ("20 pages deep, by severity", "severity")]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def seed(engine, incidents: int) -> float:
    started = time.perf_counter()
    with session_scope(engine) as session:
        session.execute(
            text("INSERT INTO teams (name, created_at) SELECT 'team-' || t, now() FROM generate_series(1, :n) t"),
            {"n": TEAMS},
        )
        for u in range(USERS):
            create_user(session=session, actor=SYSTEM, username=f"user{u}", role="responder", password=None)
        session.execute(text("SELECT setseed(0.42)"))
        session.execute(text(SEED_INCIDENTS), {"n": incidents, "users": USERS, "teams": TEAMS})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE incidents"))
    return time.perf_counter() - started


def query_page(engine, where: IncidentFilter, sort: str, cursor: str | None) -> str | None:
    with Session(engine) as session:
        found = search_incidents(session=session, where=where, sort=sort, limit=PAGE, cursor=cursor)  # type: ignore[arg-type]
    return found.next_cursor


def time_query(engine, where: IncidentFilter, sort: str, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        query_page(engine, where, sort, None)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def time_query_walk(engine, sort: str, runs: int) -> list[float]:
    """Per page (ms) over `runs` walks of DEEP_PAGES pages, each following next_cursor."""
    samples = []
    for _ in range(runs):
        cursor = None
        for _page in range(DEEP_PAGES):
            started = time.perf_counter()
            cursor = query_page(engine, IncidentFilter(), sort, cursor)
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def params_of(filters: dict[str, Any], sort: str) -> httpx.QueryParams:
    params = httpx.QueryParams({"sort": sort, "limit": PAGE})
    for key, value in filters.items():
        for item in value if isinstance(value, list) else [value]:
            params = params.add(key, str(item).lower() if isinstance(item, bool) else str(item))
    return params


async def time_http(client: httpx.AsyncClient, params: httpx.QueryParams, runs: int, pages: int = 1) -> list[float]:
    samples = []
    for _ in range(runs):
        cursor = None
        for _page in range(pages):
            started = time.perf_counter()
            response = await client.get("/api/incidents", params=params.set("cursor", cursor) if cursor else params)
            samples.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            cursor = response.json()["next_cursor"]
    return samples


def explain(engine, where: IncidentFilter, sort: str) -> None:
    """EXPLAIN ANALYZE of each statement search_incidents runs for this case (first page)."""
    statements: list[tuple[str, Any]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _executemany):
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        query_page(engine, where, sort, None)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    with engine.connect() as conn:
        for statement, parameters in statements:
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).scalars().all()
            print("    " + " ".join(statement.split())[:300])
            print("\n".join(f"      {line}" for line in plan))


async def main(incidents: int, runs: int, explain_all: bool) -> None:
    async with AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="am-bench-list-")))
        postgres = EmbeddedPostgres(tmp)
        database_url = postgres.start()
        stack.callback(postgres.stop)
        run_migrations(database_url)
        engine = make_engine(database_url, custom_plans=True)  # as `agent-monitor web` makes it
        stack.callback(engine.dispose)
        took = seed(engine, incidents)
        with session_scope(engine) as session:
            admin = create_user(session=session, actor=SYSTEM, username="bench", role="admin", password=None)
            token, _ = create_token(session=session, actor=SYSTEM, user=admin, name="bench")
            counts = dict(session.execute(text("SELECT status, count(*) FROM incidents GROUP BY status")).all())
        print(f"{incidents} incidents seeded in {took:.1f} s (incl. VACUUM ANALYZE); by status: {counts}")
        settings = Settings(_env_file=None, database_url=SecretStr(database_url))  # type: ignore[call-arg]
        app = create_app(settings, engine=engine)
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://bench",
                headers={"Authorization": f"Bearer {token}"},
            )
        )

        print(
            f"page of {PAGE}, {runs} runs per case; ms; query = search_incidents (count + page), "
            f"HTTP = GET /api/incidents in-process"
        )
        print(f"{'case':<42} {'query p50':>9} {'p95':>7} {'HTTP p50':>9} {'p95':>7}")
        slow: list[tuple[str, IncidentFilter, str]] = []
        for name, filters, sort in CASES:
            where = IncidentFilter(**filters)
            time_query(engine, where, sort, 3)  # warm the plan and the cache
            query = time_query(engine, where, sort, runs)
            http = await time_http(client, params_of(filters, sort), runs)
            print(f"{name:<42} {pct(query, 50):9.1f} {pct(query, 95):7.1f} {pct(http, 50):9.1f} {pct(http, 95):7.1f}")
            if max(pct(query, 95), pct(http, 95)) > TARGET_P95_MS:
                slow.append((name, where, sort))
        walk_runs = max(1, runs // 10)
        for name, sort in DEEP_CASES:
            query = time_query_walk(engine, sort, walk_runs)
            http = await time_http(client, params_of({}, sort), walk_runs, DEEP_PAGES)
            last_page = statistics.median(query[DEEP_PAGES - 1 :: DEEP_PAGES])
            print(
                f"{name:<42} {pct(query, 50):9.1f} {pct(query, 95):7.1f} {pct(http, 50):9.1f} {pct(http, 95):7.1f}"
                f"  (per page over {walk_runs} walks; page {DEEP_PAGES} alone: median {last_page:.1f} ms)"
            )
            if max(pct(query, 95), pct(http, 95)) > TARGET_P95_MS:
                slow.append((name, IncidentFilter(), sort))
        print(
            f"target p95 <= {TARGET_P95_MS:g} ms: " + ("met by every case" if not slow else f"NOT met by {len(slow)}")
        )
        if explain_all:
            slow = [(name, IncidentFilter(**filters), sort) for name, filters, sort in CASES]
        for name, where, sort in slow:
            print(f"\n  {name}: EXPLAIN ANALYZE")
            explain(engine, where, sort)


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=50, help="timed runs per case")
    parser.add_argument(
        "--explain", action="store_true", help="print EXPLAIN ANALYZE for every case, not just slow ones"
    )
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)  # cleanup runs for `kill` as for Ctrl-C
    try:
        print(machine_line(), flush=True)
        asyncio.run(main(options.incidents, options.runs, options.explain))
    except KeyboardInterrupt:
        sys.exit(130)
