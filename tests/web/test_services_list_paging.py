"""The services list at many services: one page of 200 by name (incidents and availability read only for those),
the statuses of every match counted, pages linked, a name search; the live refresh keeps the page."""

from __future__ import annotations

import json
import re

from sqlalchemy import text


def _services(engine, count: int, paused_every: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO services (name, config, enabled, created_by, created_at, updated_at) "
                "SELECT 'svc-' || lpad(i::text, 4, '0'), CAST(:config AS jsonb), i % :every <> 0, 'test', now(), now() "
                "FROM generate_series(1, :count) AS i"
            ),
            {
                "config": json.dumps({"check": {"type": "http", "url": "http://127.0.0.1:9/"}}),
                "every": paused_every,
                "count": count,
            },
        )


def _shown(html: str) -> list[str]:
    return re.findall(r'data-service="([^"]+)"', html)


async def test_the_services_list_pages_by_200_and_counts_every_match(api, engine):
    _services(engine, 450, paused_every=45)  # 10 paused, 440 never checked

    first = (await api.get("/services")).text
    assert "450 services: 10 paused, 440 unknown · showing 1–200 of 450" in first
    assert _shown(first) == [f"svc-{i:04d}" for i in range(1, 201)]
    assert 'href="/services?offset=200" rel="next"' in first and 'rel="prev"' not in first

    last = (await api.get("/services", params={"offset": 400})).text
    assert _shown(last) == [f"svc-{i:04d}" for i in range(401, 451)]
    assert "showing 401–450 of 450" in last and 'href="/services?offset=200" rel="prev"' in last
    assert 'rel="next"' not in last

    paused = (await api.get("/services", params={"status": "paused"})).text
    assert _shown(paused) == [f"svc-{i:04d}" for i in range(45, 451, 45)] and "showing" not in paused

    found = (await api.get("/services", params={"q": "SVC-012"})).text  # a name search, any case
    assert _shown(found) == [f"svc-{i:04d}" for i in range(120, 130)]
    assert (await api.get("/services", params={"q": "100%"})).status_code == 200  # % is a character, not a pattern
    assert _shown((await api.get("/services", params={"q": "100%"})).text) == []

    # The live refresh asks for the same page with the same filters.
    assert (
        'hx-get="/services/_rows?q=svc&amp;offset=200"'
        in (await api.get("/services", params={"q": "svc", "offset": 200})).text
    )
    rows = (await api.get("/services/_rows", params={"q": "svc", "offset": 200})).text
    assert _shown(rows)[0] == "svc-0201" and len(_shown(rows)) == 200
    assert (await api.get("/services", params={"offset": -1})).status_code == 422


def _state(engine, name: str, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO service_states (service_id, status, consecutive_failures, consecutive_passes, episode, "
                "next_check_at) SELECT id, :status, 0, 0, 0, now() FROM services WHERE name = :name"
            ),
            {"name": name, "status": status},
        )


def _window(engine, service: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO maintenance_windows (service, starts_at, ends_at, reason, created_by, created_at) "
                "VALUES (:service, now() - interval '1 hour', now() + interval '1 hour', 'test', 'test', now())"
            ),
            {"service": service},
        )


async def test_each_status_is_counted_and_filtered_as_the_rows_show_it(api, engine):
    """Postgres counts and filters the statuses (no row read in Python): paused over maintenance over the monitor's
    status; a window for every service puts every enabled one in maintenance."""
    _services(engine, 8, paused_every=8)  # svc-0008 paused
    for name, status in [("svc-0001", "up"), ("svc-0002", "down"), ("svc-0003", "degraded"), ("svc-0004", "up")]:
        _state(engine, name, status)
    _state(engine, "svc-0008", "down")  # paused wins over what its monitor last said
    _window(engine, "svc-0004")  # up, but in maintenance
    page = (await api.get("/services")).text
    assert "8 services: 1 down, 1 degraded, 1 up, 1 maintenance, 1 paused, 3 unknown" in page
    for status, names in [
        ("up", ["svc-0001"]),
        ("down", ["svc-0002"]),
        ("maintenance", ["svc-0004"]),
        ("paused", ["svc-0008"]),
        ("unknown", ["svc-0005", "svc-0006", "svc-0007"]),
    ]:
        shown = (await api.get("/services", params={"status": status})).text
        assert _shown(shown) == names, status
        assert re.findall(r'<tr data-service="[^"]+" data-status="([^"]+)"', shown) == [status] * len(names), status

    _window(engine, None)  # every service
    page = (await api.get("/services")).text
    assert "8 services: 7 maintenance, 1 paused" in page
    assert _shown((await api.get("/services", params={"status": "maintenance"})).text) == [
        f"svc-{i:04d}" for i in range(1, 8)
    ]
