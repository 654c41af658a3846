"""The uptime API on real Postgres, over rollups the monitor's real write path kept: one service's answer (summary,
points, availability with degraded and maintenance, percentiles), incident markers and their filters, compare with
the previous period, all services and a group, ETag and 304, the CSV exports (shape, streaming a large one with
bounded memory), and the 422s that name the field."""

from __future__ import annotations

import asyncio
import tracemalloc
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from activities.monitoring.store import MonitorStore
from core.monitoring import MaintenanceWindow
from core.tables import Incident, WorkflowRun, WorkflowStep, utcnow
from core.uptime import align_up, latency_bucket
from services.uptime import resolve_period
from services.uptime_csv import csv_lines
from tests.workflows.rollup_rows import add_service, result, write

pytestmark = pytest.mark.asyncio


def _minute_ago(minutes: int):
    now = utcnow().replace(second=0, microsecond=0)
    return now - timedelta(minutes=minutes)


def seed(engine: Engine) -> dict:
    """checkout: 10 checks in the last hour (6 up, 1 degraded, 2 down, 1 silenced) and 4 up in the hour before;
    search: 2 down; two incidents of checkout, one whose playbook ran `restart`."""
    checkout = add_service(engine, "checkout")
    search = add_service(engine, "search")
    with engine.begin() as conn:
        conn.execute(text("UPDATE services SET config = config || '{\"tags\": [\"shop\"]}' WHERE name = 'search'"))
    now_batch = [
        result(checkout, _minute_ago(30) + timedelta(seconds=s), st, ms)
        for s, st, ms in [(0, "up", 10.0), (10, "up", 20.0), (20, "up", 30.0), (30, "up", 40.0), (40, "up", 50.0),
                          (50, "up", 60.0)]
    ]  # fmt: skip
    now_batch += [
        result(checkout, _minute_ago(20), "degraded", 900.0),
        result(checkout, _minute_ago(10), "down", None),
        result(checkout, _minute_ago(10) + timedelta(seconds=30), "down", 2000.0),
        result(search, _minute_ago(5), "down", None),
        result(search, _minute_ago(4), "down", None),
    ]
    write(engine, now_batch)
    MonitorStore(engine).skip(checkout, _minute_ago(15))
    write(engine, [result(checkout, _minute_ago(90) + timedelta(minutes=i), "up", 100.0) for i in range(4)])
    with Session(engine) as session:
        first = Incident(title="checkout is down", service="checkout", severity="P2", incident_type="service_down",
                         description="HTTP 500 from /health\nmore", status="resolved",
                         created_at=_minute_ago(11), resolved_at=_minute_ago(8))  # fmt: skip
        second = Incident(title="checkout is slow", service="checkout", severity="P4", incident_type="degraded",
                          created_at=_minute_ago(21))  # fmt: skip
        old = Incident(title="long ago", service="checkout", severity="P1", status="resolved",
                       created_at=_minute_ago(60 * 24 * 3), resolved_at=_minute_ago(60 * 24 * 3 - 5))  # fmt: skip
        session.add_all([first, second, old])
        session.flush()
        session.add(WorkflowRun(workflow_id=f"incident-{first.id}", incident_id=first.id))
        session.flush()
        session.add(WorkflowStep(workflow_id=f"incident-{first.id}", step_id="fix", agent="restart"))
        session.commit()
        return {"checkout": checkout, "search": search, "first": first.id, "second": second.id}


async def test_one_service_uptime_follows_the_contract(api: httpx.AsyncClient, engine: Engine) -> None:
    ids = seed(engine)
    answer = await api.get("/api/services/checkout/uptime", params={"range": "1h"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["service"], body["range"], body["step"], body["resolution"], body["timezone"]) == (
        "checkout", "1h", "1m", "minute", "UTC",
    )  # fmt: skip
    end = align_up(utcnow(), timedelta(minutes=1))
    assert body["end"] == end.isoformat() and body["start"] == (end - timedelta(hours=1)).isoformat()
    summary = body["summary"]
    # 10 checks: 6 up + 1 degraded available, 2 down, 1 in maintenance left out → 7 / 9.
    assert (summary["checks"], summary["up"], summary["degraded"], summary["down"], summary["maintenance"]) == (
        10, 6, 1, 2, 1,
    )  # fmt: skip
    assert summary["availability"] == round(7 / 9, 6)
    # Latencies 10…60, 900, 2000 (8 of them): p50 is the 4th (40 ms), p95 the 8th (2000 ms), within a bucket.
    assert abs(summary["p50_ms"] - 40) / 40 < 0.1 and summary["max_ms"] == 2000.0
    assert summary["p95_ms"] == round(min(2 ** ((latency_bucket(2000) - 0.5) / 4), 2000.0), 1)
    # Only buckets with data: the 30-minutes-ago minute (6 checks), -20, -15 (maintenance only), -10.
    points = {p["t"]: p for p in body["points"]}
    assert len(points) == 4
    silenced = points[_minute_ago(15).isoformat()]
    assert (silenced["checks"], silenced["maintenance"], silenced["availability"], silenced["p50_ms"]) == (
        1, 1, None, None,
    )  # fmt: skip
    assert points[_minute_ago(10).isoformat()]["availability"] == 0.0
    assert points[_minute_ago(30).isoformat()]["checks"] == 6

    # Incident markers: both recent incidents, not the one three days ago; its cause is the description's line.
    markers = {i["id"]: i for i in body["incidents"]}
    assert set(markers) == {ids["first"], ids["second"]}
    first = markers[ids["first"]]
    assert first["duration_seconds"] == 180.0 and first["cause"] == "HTTP 500 from /health"
    assert first["url"] == f"/incidents/{ids['first']}" and markers[ids["second"]]["resolved_at"] is None
    for params, expected in [
        ({"incident_type": "degraded"}, {ids["second"]}),
        ({"severity": "P2"}, {ids["first"]}),
        ({"agent": "restart"}, {ids["first"]}),
        ({"agent": "nobody"}, set()),
    ]:
        filtered = await api.get("/api/services/checkout/uptime", params={"range": "1h", **params})
        assert {i["id"] for i in filtered.json()["incidents"]} == expected, params


async def test_compare_with_the_previous_period(api: httpx.AsyncClient, engine: Engine) -> None:
    seed(engine)
    body = (await api.get("/api/services/checkout/uptime", params={"range": "1h", "compare": "previous"})).json()
    previous = body["previous"]
    assert previous["end"] == body["start"]
    assert previous["summary"]["checks"] == 4 and previous["summary"]["availability"] == 1.0
    # Its points are shifted onto this period: 90 minutes ago shows at 30 minutes ago.
    assert previous["points"][0]["t"] == _minute_ago(30).isoformat()
    assert body["delta"]["availability"] == round(7 / 9 - 1.0, 6)
    assert body["delta"]["p95_ms"] == round(body["summary"]["p95_ms"] - previous["summary"]["p95_ms"], 6)
    plain = (await api.get("/api/services/checkout/uptime", params={"range": "1h"})).json()
    assert "previous" not in plain and "delta" not in plain


async def test_all_services_and_a_group(api: httpx.AsyncClient, engine: Engine) -> None:
    seed(engine)
    body = (await api.get("/api/uptime", params={"range": "24h"})).json()
    assert body["summary"]["checks"] == 16 and body["summary"]["down"] == 4  # 14 of checkout, 2 of search
    assert [s["name"] for s in body["services"]] == ["checkout", "search"]
    assert body["services"][1]["summary"]["availability"] == 0.0
    assert body["services"][0]["status"] in ("up", "down", "degraded", "unknown")
    # The services page's graph asks for the summed figures only: the same points, summary and incidents.
    summed = (await api.get("/api/uptime", params={"range": "24h", "per_service": "false"})).json()
    assert "services" not in summed
    assert {k: v for k, v in body.items() if k != "services"} == summed
    shop = (await api.get("/api/uptime", params={"range": "1h", "group": "shop"})).json()
    assert [s["name"] for s in shop["services"]] == ["search"] and shop["summary"]["checks"] == 2
    named = (await api.get("/api/uptime", params=[("range", "1h"), ("service", "checkout")])).json()
    assert named["summary"]["checks"] == 10
    missing = await api.get("/api/uptime", params={"service": "nope"})
    assert missing.status_code == 404


async def test_etag_and_304(api: httpx.AsyncClient, engine: Engine) -> None:
    ids = seed(engine)
    first = await api.get("/api/services/checkout/uptime", params={"range": "1h"})
    etag = first.headers["etag"]
    assert first.headers["last-modified"].endswith("GMT")
    again = await api.get("/api/services/checkout/uptime", params={"range": "1h"}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    write(engine, [result(ids["checkout"], _minute_ago(1), "up", 5.0)])  # a new result changes the answer
    changed = await api.get("/api/services/checkout/uptime", params={"range": "1h"}, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    # With an incident still open (its duration counts to the minute: the answer holds within one), twice in a row
    # (a minute may turn between the first two).
    statuses = []
    for _ in range(2):
        group = await api.get("/api/uptime")
        statuses.append((await api.get("/api/uptime", headers={"If-None-Match": group.headers["etag"]})).status_code)
    assert 304 in statuses


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"range": "2d"}, "query.range"),
        ({"range": "7d", "step": "1m"}, "query.step"),  # 10,080 points
        ({"range": "1h", "step": "1d"}, "query.step"),  # longer than the range
        ({"range": "24h", "step": "2m"}, "query.step"),
        ({"range": "30d", "step": "15m"}, "query.step"),  # 2,880 points
        ({"range": "24h", "end": "2026-12-01T00:00:00"}, "query.end"),  # no offset
        ({"range": "24h", "compare": "next"}, "query.compare"),
    ],
)
async def test_bad_queries_are_422_naming_the_field(api: httpx.AsyncClient, engine: Engine, params, field) -> None:
    add_service(engine, "checkout")
    for path in ("/api/services/checkout/uptime", "/api/services/checkout/uptime.csv"):
        answer = await api.get(path, params=params)
        if "compare" in params and path.endswith(".csv"):
            continue  # the CSV has no comparison: an unknown parameter is ignored
        assert answer.status_code == 422, (path, params, answer.text)
        assert answer.json()["errors"][0]["field"] == field, answer.json()


async def test_a_step_finer_than_the_data_kept_is_422(app, api: httpx.AsyncClient, engine: Engine) -> None:
    add_service(engine, "checkout")
    app.state.settings = app.state.settings.model_copy(update={"uptime_minute_retention_days": 1})
    kept = await api.get("/api/services/checkout/uptime", params={"range": "24h", "step": "1m"})
    assert kept.status_code == 200
    gone = await api.get("/api/services/checkout/uptime", params={"range": "7d", "step": "15m"})
    assert gone.status_code == 422 and gone.json()["errors"][0]["field"] == "query.step"
    assert "minute rollups are kept 1 days" in gone.json()["detail"]
    old = await api.get(
        "/api/services/checkout/uptime",
        params={"range": "24h", "step": "1m", "end": (utcnow() - timedelta(days=3)).isoformat()},
    )
    assert old.status_code == 422 and old.json()["errors"][0]["field"] == "query.step"
    assert (await api.get("/api/services/nope/uptime")).status_code == 404


async def test_csv_shape(api: httpx.AsyncClient, engine: Engine) -> None:
    seed(engine)
    answer = await api.get("/api/services/checkout/uptime.csv", params={"range": "1h"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    lines = answer.text.splitlines()
    end = align_up(utcnow(), timedelta(minutes=1))
    assert lines[0] == (
        f"# service=checkout range=1h step=1m start={(end - timedelta(hours=1)).isoformat()} end={end.isoformat()} "
        "timezone=UTC"
    )
    assert lines[1] == "bucket_start,service,checks,up,degraded,down,maintenance,availability,p50_ms,p95_ms,max_ms"
    rows = [line.split(",") for line in lines[2:]]
    assert len(rows) == 4 and all(r[1] == "checkout" for r in rows)
    assert rows[0][0] == _minute_ago(30).isoformat() and rows[0][2:8] == ["6", "6", "0", "0", "0", "1"]
    assert rows[1][2:8] == ["1", "0", "1", "0", "0", "1"]
    assert rows[2][2:8] == ["1", "0", "0", "0", "1", ""]  # only maintenance: no availability
    everyone = (await api.get("/api/uptime.csv", params={"range": "24h", "step": "1h"})).text.splitlines()
    assert everyone[0].startswith("# services=all range=24h step=1h ")
    assert {line.split(",")[1] for line in everyone[2:]} == {"checkout", "search"}


async def test_a_large_export_is_streamed_with_bounded_memory(app, api: httpx.AsyncClient, engine: Engine) -> None:
    """120 services × 720 hours (86,400 rows, about 5.7 MB of CSV): the export's memory stays a small fraction of
    its size (under 2 MB; every row at once took 137 MB for 300 services), and the API sends it in many chunks."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO services (name, config, enabled, created_by, created_at, updated_at) "
                "SELECT 'svc-' || g, '{}'::jsonb, true, '', now(), now() FROM generate_series(1, 120) g"
            )
        )
        conn.execute(
            text(
                "INSERT INTO uptime_rollups_hour (service_id, bucket, checks, up, degraded, down, maintenance, "
                "latency_sum, latency_count, latency_max, hist, updated_at) "
                "SELECT s.id, date_trunc('hour', now()) - make_interval(hours => h), 60, 59, 0, 1, 0, 600, 59, 40, "
                "'[20:24]={10,20,20,8,1}'::int[], now() FROM services s, generate_series(0, 719) h"
            )
        )
    span = resolve_period(settings=app.state.settings, range_="30d", step="1h", end=None)
    ids = [r[0] for r in engine.connect().execute(text("SELECT id FROM services")).all()]
    tracemalloc.start()
    size = rows = 0
    for chunk in csv_lines(engine=engine, service_ids=ids, span=span, label="services=all"):
        size += len(chunk)
        rows += chunk.count("\n")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert rows == 2 + 120 * 720
    assert size > 5_000_000 and peak < 2_000_000, (size, peak)  # all at once: about 50 MB

    # Through the app (as ASGI: httpx's test transport would gather the body first): many body messages.
    messages = await asgi_get(app, "/api/uptime.csv", "range=7d&step=1h", api.headers["Authorization"])
    assert messages[0]["status"] == 200
    bodies = [m for m in messages[1:] if m["type"] == "http.response.body"]
    assert len(bodies) > 30 and sum(len(m.get("body", b"")) for m in bodies) > size / 5


async def asgi_get(app, path: str, query: str, authorization: str) -> list[dict]:
    """The ASGI messages the app sends for one GET, as a server would receive them."""
    sent: list[dict] = []
    asked = asyncio.Event()

    async def receive() -> dict:
        if asked.is_set():  # the client stays connected until the response ends
            await asyncio.Event().wait()
        asked.set()
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", authorization.encode())],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    return sent


async def test_the_overview_uptime_tile_shows_real_figures(api: httpx.AsyncClient, engine: Engine) -> None:
    empty = await api.get("/overview/partials/metrics")
    assert empty.status_code == 200 and "no monitored services yet" in empty.text
    ids = seed(engine)
    add_service(engine, "billing")
    with Session(engine) as session:
        session.add(MaintenanceWindow(service="billing", starts_at=utcnow() - timedelta(minutes=5),
                                      ends_at=utcnow() + timedelta(hours=1)))  # fmt: skip
        session.commit()
    write(engine, [result(ids["checkout"], _minute_ago(2), "up", 5.0)])  # checkout: up now
    tile = (await api.get("/overview/partials/metrics")).text
    assert "no monitored services yet" not in tile
    assert '<span class="svc-up" data-status="up">1 up</span>' in tile  # checkout
    assert '<span class="svc-maintenance" data-status="maintenance">1 maintenance</span>' in tile  # billing
    assert "1 not checked yet" in tile  # search: only failures below the threshold, still unknown
    # Today: search 0 of 2 checks, checkout 9 of 11 → search is the worst (unless today began minutes ago).
    if utcnow() - utcnow().replace(hour=0, minute=0, second=0, microsecond=0) > timedelta(minutes=6):
        assert 'worst today: <a href="/services/search">search</a> <span class="bad">0.00%</span>' in tile, tile


async def test_the_services_lists_availability_reads_whole_days_and_edge_hours_as_the_hours_would(
    engine: Engine,
) -> None:
    """availability_by_service reads the day rollups inside its window and the hour rollups at its edges (the
    services page at 1,000 services: 276 → 34 ms); its figures are those of the checks in the window's whole hours."""
    from services.uptime import availability_by_service

    flaky = add_service(engine, "flaky-days")
    now = utcnow()
    end = align_up(now, timedelta(hours=1))
    plan = [(hours_ago, status) for hours_ago in (0.2, 3, 23.5, 30, 47, 100, 160, 200, 600, 700, 719.5)
            for status in ("up", "down" if int(hours_ago) % 3 == 0 else "degraded", "up")]  # fmt: skip
    results = [result(flaky, now - timedelta(hours=h, seconds=i), st) for i, (h, st) in enumerate(plan)]
    for start in range(0, len(results), 3):  # as ticks flush them: a few at a time
        write(engine, results[start : start + 3])
    with Session(engine) as session:
        figures = availability_by_service(session=session, service_ids=[flaky.service_id], now=now)[flaky.service_id]
    for range_, span in (("24h", timedelta(hours=24)), ("7d", timedelta(days=7)), ("30d", timedelta(days=30))):
        inside = [r for r in results if end - span <= r.scheduled_at.replace(minute=0, second=0, microsecond=0) < end]
        available = sum(r.status in ("up", "degraded") for r in inside)
        assert figures[range_] == pytest.approx(available / len(inside)), range_


async def test_the_all_services_graph_merges_its_past_once_and_still_shows_late_results(
    api: httpx.AsyncClient, engine: Engine, settings
) -> None:
    """The all-services graph's whole past points come from a per-process cache checked against the rollups'
    fingerprint on every request: the same answer as reading everything, read once, and a result written late into a
    past day (as after a Postgres outage), or a deleted service, shows in the next answer."""
    from services.uptime import SETTLED, Series, Totals, per_service, series

    SETTLED.clear()
    one, two = add_service(engine, "past-one"), add_service(engine, "past-two")
    now = utcnow()
    write(engine, [result(one, now - timedelta(days=d, minutes=7), "up", 10.0 * d) for d in (1, 3, 9, 20)])
    write(engine, [result(two, now - timedelta(days=d, minutes=3), st, 300.0) for d, st in ((2, "down"), (4, "up"))])
    write(engine, [result(one, now - timedelta(minutes=2), "degraded", 700.0)])

    def uncached() -> tuple[Series, dict[int, Totals]]:
        with Session(engine) as session:
            span = resolve_period(settings=settings, range_="30d", step="1d", end=None)
            conn = session.connection()
            return series(conn, service_ids=ids, span=span), per_service(conn, service_ids=ids, span=span)

    ids = sorted([one.service_id, two.service_id])
    params = {"range": "30d", "step": "1d"}
    first = (await api.get("/api/uptime", params=params)).json()
    reads = SETTLED.reads
    assert reads >= 1
    points, totals = uncached()
    assert first["summary"] == points.total.public()
    assert [p["checks"] for p in first["points"]] == [t.checks for _, t in points.points]
    assert {s["name"]: s["summary"] for s in first["services"]} == {
        "past-one": totals[one.service_id].public(), "past-two": totals[two.service_id].public()
    }  # fmt: skip
    again = (await api.get("/api/uptime", params=params)).json()
    assert again == first and SETTLED.reads == reads  # the past was not merged again

    # A late result in a past day: the fingerprint changed, so the past is read again and the answer has it.
    write(engine, [result(two, now - timedelta(days=6, minutes=1), "down", None)])
    late = (await api.get("/api/uptime", params=params)).json()
    assert SETTLED.reads == reads + 1
    assert late["summary"]["checks"] == first["summary"]["checks"] + 1
    assert late["summary"]["down"] == first["summary"]["down"] + 1
    assert late["summary"] == uncached()[0].total.public()

    assert (await api.delete("/api/services/past-two")).is_success
    gone = (await api.get("/api/uptime", params=params)).json()
    assert [s["name"] for s in gone["services"]] == ["past-one"]
    assert gone["summary"]["checks"] == 5
