"""GET /api/incidents: filters, sort orders and keyset pages, on rows in the real Postgres."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.incident_rows import insert_incident, insert_incidents
from tests.factories import create_incident, make_user

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
SEVERITY_ORDER = {"P1": 0, "P2": 1, "P3": 2, "P4": 3}


@dataclass
class Row:
    id: int
    title: str
    description: str
    service: str
    incident_type: str
    severity: str
    status: str
    assignee_user_id: int | None
    assignee_team_id: int | None
    updated_at: datetime


@pytest.fixture
async def rows(api, engine) -> list[Row]:
    """45 incidents with every filterable field varied; several share an updated_at to test the tie-break."""
    user_a, _ = make_user(engine, "responder", username="ann")
    user_b, _ = make_user(engine, "responder", username="ben")
    team = (await api.post("/api/teams", json={"name": "dba"})).json()["id"]
    titles = ["Checkout 500s", "100% CPU on api", "100X CPU on db", "disk_full on db-1", "diskXfull on db-2"]
    made = []
    for n in range(45):
        values: dict[str, Any] = {
            "title": titles[n % len(titles)] + f" #{n}",
            "description": "Upstream TIMEOUT from payments" if n % 7 == 0 else "",
            "service": ("checkout", "api", "db")[n % 3],
            "incident_type": ("default", "database")[n % 2],
            "severity": ("P1", "P2", "P3", "P4")[n % 4],
            "status": ("open", "in_progress", "resolved", "closed", "reopened")[n % 5],
            "assignee_user_id": (None, user_a.id, user_b.id, None)[n % 4],
            "assignee_team_id": team if n % 6 == 0 else None,
            "updated_at": BASE_TIME + timedelta(minutes=(n * 7) % 20),  # collisions on purpose
        }
        made.append(values)
    ids = insert_incidents(engine, made)
    return [Row(id=incident_id, **values) for incident_id, values in zip(ids, made, strict=True)]


async def walk(api: httpx.AsyncClient, limit: int = 7, **params: Any) -> tuple[list[int], int]:
    """Every page of the list with these params: (ids in order, total reported)."""
    ids: list[int] = []
    totals = set()
    cursor = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await api.get("/api/incidents", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        ids += [item["id"] for item in page["items"]]
        totals.add(page["total"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["items"]) == limit
    assert len(totals) == 1
    return ids, totals.pop()


def newest(rows: list[Row]) -> list[int]:
    return sorted((r.id for r in rows), reverse=True)


FILTERS: list[tuple[dict[str, Any], Any]] = [
    ({}, lambda r, u: True),
    ({"status": "open"}, lambda r, u: r.status == "open"),
    ({"status": ["open", "reopened"]}, lambda r, u: r.status in ("open", "reopened")),
    ({"severity": ["P1", "P4"]}, lambda r, u: r.severity in ("P1", "P4")),
    ({"service": "db"}, lambda r, u: r.service == "db"),
    ({"incident_type": "database"}, lambda r, u: r.incident_type == "database"),
    ({"assignee_user_id": "ann"}, lambda r, u: r.assignee_user_id == u["ann"]),
    ({"assignee_team_id": "dba"}, lambda r, u: r.assignee_team_id == u["dba"]),
    ({"unassigned": "true"}, lambda r, u: r.assignee_user_id is None and r.assignee_team_id is None),
    ({"q": "cpu"}, lambda r, u: "cpu" in r.title.lower()),
    ({"q": "timeout from"}, lambda r, u: "timeout from" in r.description.lower()),
    ({"q": "100%"}, lambda r, u: "100%" in r.title),
    ({"q": "disk_full"}, lambda r, u: "disk_full" in r.title),
    ({"q": "  CPU  "}, lambda r, u: "cpu" in r.title.lower()),
    (
        {"status": ["open", "in_progress", "reopened"], "severity": ["P1", "P2"], "service": "checkout"},
        lambda r, u: (
            r.status in ("open", "in_progress", "reopened") and r.severity in ("P1", "P2") and r.service == "checkout"
        ),
    ),
    (
        {"q": "cpu", "service": "api", "unassigned": "true"},
        lambda r, u: (
            "cpu" in r.title.lower()
            and r.service == "api"
            and r.assignee_user_id is None
            and r.assignee_team_id is None
        ),
    ),
    ({"assignee_user_id": "ben", "unassigned": "true"}, lambda r, u: False),
]


async def test_filters_select_exactly_the_matching_incidents(api, rows):
    teams = {t["name"]: t["id"] for t in (await api.get("/api/teams")).json()}
    users = {u["username"]: u["id"] for u in (await api.get("/api/users")).json()}
    names = {**users, **teams}
    for params, matches in FILTERS:
        query = {
            k: names.get(v, v) if isinstance(v, str) and k.startswith("assignee") else v for k, v in params.items()
        }
        expected = newest([r for r in rows if matches(r, names)])
        ids, total = await walk(api, **query)
        assert ids == expected, params
        assert total == len(expected), params
    # `%` and `_` are literal: neither matches the look-alike rows.
    assert len((await walk(api, q="100%"))[0]) == 9 and len((await walk(api, q="disk_full"))[0]) == 9


SORT_KEYS = {
    "newest": lambda r: -r.id,
    "oldest": lambda r: r.id,
    "severity": lambda r: (SEVERITY_ORDER[r.severity], -r.id),
    "updated": lambda r: (-r.updated_at.timestamp(), -r.id),
}


async def test_every_sort_pages_through_each_incident_once_in_order(api, rows):
    for sort, key in SORT_KEYS.items():
        expected = [r.id for r in sorted(rows, key=key)]
        for limit in (1, 7, 45, 200):
            ids, total = await walk(api, limit=limit, sort=sort)
            assert ids == expected, (sort, limit)
            assert total == 45
        checkout = [r.id for r in sorted((r for r in rows if r.service == "checkout"), key=key)]
        assert (await walk(api, limit=4, sort=sort, service="checkout"))[0] == checkout, sort
    assert (await api.get("/api/incidents")).json()["items"][0]["id"] == max(r.id for r in rows)  # newest default


async def test_an_incident_created_between_pages_neither_shifts_nor_repeats_them(api, engine, rows):
    """Keyset pages: a newer incident does not push rows of page one onto page two (as offsets would)."""
    first = (await api.get("/api/incidents", params={"limit": 10})).json()
    insert_incident(engine, title="arrived meanwhile")
    second = (await api.get("/api/incidents", params={"limit": 50, "cursor": first["next_cursor"]})).json()
    ids = [i["id"] for i in first["items"]] + [i["id"] for i in second["items"]]
    assert ids == newest(rows)
    assert second["total"] == first["total"] + 1


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


GARBAGE_CURSORS = [
    ("newest", "garbage"),
    ("newest", "!!!"),
    ("newest", cursor_of({"id": 5})),
    ("newest", cursor_of([])),
    ("newest", cursor_of(["5"])),
    ("newest", cursor_of([True])),
    ("newest", cursor_of([1.5])),
    ("newest", cursor_of([2**70])),
    ("severity", cursor_of([5])),
    ("severity", cursor_of(["P9", 5])),
    ("severity", cursor_of(["P1", False])),
    ("updated", cursor_of(["yesterday", 5])),
    ("updated", cursor_of([123, 5])),
    ("updated", cursor_of(["2026-01-01T00:00:00", 5])),
    ("updated", cursor_of(["2026-01-01T00:00:00+00:00", "x"])),
    ("oldest", base64.urlsafe_b64encode(b"\xff\xfe").decode()),
]


async def test_a_garbage_cursor_is_422_with_a_clear_message(api, engine):
    message = "not a cursor from this list (use next_cursor as given)"
    for sort, cursor in GARBAGE_CURSORS:
        response = await api.get("/api/incidents", params={"sort": sort, "cursor": cursor})
        assert response.status_code == 422, (sort, cursor, response.text)
        assert response.json() == {"detail": f"cursor: {message}", "errors": [{"field": "cursor", "message": message}]}
    # A real cursor of one sort order is no cursor of another.
    for _ in range(2):
        insert_incident(engine)
    cursor = (await api.get("/api/incidents", params={"limit": 1})).json()["next_cursor"]
    assert cursor is not None
    assert (await api.get("/api/incidents", params={"sort": "updated", "cursor": cursor})).status_code == 422


async def test_bad_list_parameters_are_422(api):
    for params in (
        {"status": "paused"},
        {"severity": "P0"},
        {"sort": "random"},
        {"limit": 0},
        {"limit": 201},
        {"assignee_user_id": 0},
        {"q": "x" * 201},
        {"cursor": "x" * 201},
    ):
        response = await api.get("/api/incidents", params=params)
        assert response.status_code == 422, params
        assert next(iter(params)) in response.json()["errors"][0]["field"], response.json()


async def test_incidents_created_through_the_api_are_found_and_paged(api, client_as):
    viewer = await client_as("viewer")
    made = [
        await create_incident(api, title="Login page 502", service="auth", severity="P1"),
        await create_incident(api, title="Slow LOGIN", service="auth", severity="P3", description="p99 above 2s"),
        await create_incident(api, title="Cart empty", service="cart", severity="P2", description="after login"),
    ]
    ids, total = await walk(viewer, limit=2, q="login")
    assert ids == [m["id"] for m in reversed(made)] and total == 3
    by_severity, _ = await walk(viewer, limit=1, sort="severity", q="LOGIN")
    assert by_severity == [made[0]["id"], made[2]["id"], made[1]["id"]]
    page = (await viewer.get("/api/incidents", params={"service": "auth", "severity": "P1"})).json()
    assert [i["id"] for i in page["items"]] == [made[0]["id"]] and page["next_cursor"] is None
    assert (await viewer.get("/api/incidents", params={"q": "nothing like this"})).json()["items"] == []


async def test_many_concurrent_readers_are_all_answered(api, rows):
    """More simultaneous requests than the threadpool and the connection pool together."""
    requests = [api.get("/api/incidents", params={"limit": 5}) for _ in range(60)]
    requests += [api.get(f"/api/incidents/{rows[n % len(rows)].id}") for n in range(60)]
    requests += [api.get(f"/api/incidents/{rows[0].id}/timeline") for _ in range(30)]
    responses = await asyncio.wait_for(asyncio.gather(*requests), timeout=20)
    assert {r.status_code for r in responses} == {200}


async def test_the_total_is_counted_up_to_ten_thousand_and_then_says_so(api, engine):
    """Past 10,000 matches the count stops: `total` 10,000 with `total_capped`, and the page says "10,000+";
    below it (a narrower filter) the count is exact."""
    from sqlalchemy import text

    template = insert_incident(engine, service="noisy", severity="P4")
    insert_incident(engine, service="quiet", severity="P1")
    with engine.begin() as conn:
        columns = conn.execute(
            text(
                "SELECT string_agg(quote_ident(column_name), ', ') FROM information_schema.columns "
                "WHERE table_name = 'incidents' AND column_name NOT IN ('id', 'workflow_id', 'idempotency_key')"
            )
        ).scalar_one()
        conn.execute(
            text(
                f"INSERT INTO incidents ({columns}) SELECT {columns} FROM incidents, generate_series(1, 10000) "
                "WHERE id = :id"
            ),
            {"id": template},
        )
    everything = (await api.get("/api/incidents", params={"limit": 1})).json()
    assert (everything["total"], everything["total_capped"]) == (10_000, True)
    assert everything["next_cursor"]  # paging goes on past the count
    quiet = (await api.get("/api/incidents", params={"service": "quiet"})).json()
    assert (quiet["total"], quiet["total_capped"]) == (1, False)
    # A text search counts up to 500 (each match is rechecked in the table).
    searched = (await api.get("/api/incidents", params={"q": "disk", "limit": 1})).json()
    assert (searched["total"], searched["total_capped"]) == (500, True)
    page = await api.get("/")  # the list page, with the same token
    assert "10,000+ incidents" in page.text, page.text[:500]
