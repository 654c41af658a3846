"""A sustained slowdown opens an incident of its own (issue 19, "Degraded"): a service's `degraded_incident` setting,
on the real dev server and Postgres with real local HTTP services whose answers we slow down."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client

from core.conversations import ConversationMessage
from core.settings import Settings
from core.tables import Event
from tests.peers import http_service
from tests.workflows.test_engine import wait_until
from tests.workflows.test_monitoring import (
    incidents_of,
    monitor_settings,
    monitoring,
    register,
    results,
    state_of,
    up,
)

SLOW = {"timeout_seconds": 5, "degraded_latency_ms": 300}  # a 0.6 s answer is slow, far from the timeout
DELAY = 0.6


def events(engine: Engine, incident_id: int | None, kind: str) -> list[Event]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(Event).where(Event.incident_id == incident_id, Event.kind == kind).order_by(col(Event.id))
            )
        )


def messages(engine: Engine, incident_id: int | None) -> list[str]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(ConversationMessage.content).where(ConversationMessage.incident_id == incident_id)
            ).all()
        )


def degraded(engine: Engine, service: str) -> bool:
    state = state_of(engine, service)
    return state is not None and state.status == "degraded"


async def test_a_sustained_slowdown_opens_one_incident_of_its_type_and_without_the_setting_none(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    settings = monitor_settings(settings)
    with http_service() as (url, peer), http_service() as (other_url, other):
        registered = await register(
            api, "search", url, **SLOW,
            degraded_incident={"after_checks": 3, "incident_type": "slowness", "severity": "P3"},
        )  # fmt: skip
        await register(api, "catalog", other_url, **SLOW)  # degraded results only: today's behaviour
        async with monitoring(temporal_client, engine, settings):
            await wait_until(lambda: up(engine, "search") and up(engine, "catalog"), 20, "both up while fast")
            peer.delay = other.delay = DELAY
            await wait_until(lambda: len(incidents_of(engine, "search")) == 1, 30, "the slow spell's incident")
            (incident,) = incidents_of(engine, "search")
            slow = [r for r in results(engine, "search") if r.error_kind == "slow"]
            # Opened by the third slow check in a row, not before.
            assert len([r for r in slow if r.checked_at <= incident.created_at]) >= 3
            assert incident.title.startswith("search is degraded: answered in ")
            assert incident.title.endswith(" ms, above 300 ms for 3 checks")
            latency = float(incident.title.split("answered in ")[1].split(" ms")[0])
            assert latency >= DELAY * 1000
            assert (incident.incident_type, incident.severity) == ("slowness", "P3")
            assert incident.idempotency_key.startswith(f"service:{registered['id']}:degraded:")
            assert "answered slower than 300 ms in 3 check(s) in a row" in incident.description
            assert incident.service_url == url and incident.workflow_id is not None
            # On its timeline (written just after the incident's row).
            await wait_until(lambda: events(engine, incident.id, "incident.service_degraded"), 10, "the announcement")
            (announced,) = events(engine, incident.id, "incident.service_degraded")
            assert announced.data["how"] == "opened" and announced.data["checks"] == 3
            assert any("answered slower than 300 ms" in m for m in messages(engine, incident.id))

            # The spell goes on: more slow checks, still one incident; catalog, slow as long, opened none.
            count = len(slow)
            await wait_until(lambda: len([r for r in results(engine, "search") if r.error_kind == "slow"]) >= count + 3,
                             20, "three more slow checks")  # fmt: skip
            assert len(incidents_of(engine, "search")) == 1
            assert degraded(engine, "search") and degraded(engine, "catalog")
            assert len([r for r in results(engine, "catalog") if r.error_kind == "slow"]) >= 5
            assert incidents_of(engine, "catalog") == []

            # Fast again: the spell's end is recorded on its incident.
            peer.delay = other.delay = 0
            await wait_until(lambda: events(engine, incident.id, "incident.service_recovered"), 20, "its end")
            (ended,) = events(engine, incident.id, "incident.service_recovered")
            assert ended.data["spell"] == incident.idempotency_key and ended.data["status"] == "up"
            assert any("search is fast again at" in m for m in messages(engine, incident.id))
            assert up(engine, "search") and len(incidents_of(engine, "search")) == 1


async def test_a_slowdown_that_turns_into_an_outage_stays_one_incident_at_the_outages_severity(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    settings = monitor_settings(settings)
    with http_service() as (url, peer):
        await register(api, "checkout", url, **SLOW, failure_threshold=2, severity="P1",
                       degraded_incident={"after_checks": 2})  # fmt: skip
        async with monitoring(temporal_client, engine, settings):
            await wait_until(lambda: up(engine, "checkout"), 20, "up while fast")
            peer.delay = DELAY
            await wait_until(lambda: len(incidents_of(engine, "checkout")) == 1, 30, "the slow spell's incident")
            (incident,) = incidents_of(engine, "checkout")
            assert (incident.incident_type, incident.severity) == ("degraded", "P4")  # the setting's defaults

            peer.delay, peer.status = 0, 503
            await wait_until(
                lambda: (state := state_of(engine, "checkout")) is not None
                and state.status == "down" and state.incident_id is not None,
                30, "the outage linked to an incident",
            )  # fmt: skip
            # Joined while open, or reopened if its playbook had resolved it meanwhile: the same incident either way.
            assert [i.id for i in incidents_of(engine, "checkout")] == [incident.id]
            assert state_of(engine, "checkout").incident_id == incident.id
            (after,) = incidents_of(engine, "checkout")
            assert after.severity == "P1" and after.status not in ("resolved", "closed")
            (raised,) = events(engine, incident.id, "incident.severity_raised")
            assert (raised.data["previous_severity"], raised.data["severity"]) == ("P4", "P1")
            assert raised.data["reason"] == "checkout is down (outage 1)"
            await asyncio.sleep(2)  # more failed checks: still the one incident
            assert len(incidents_of(engine, "checkout")) == 1


async def test_a_slowdown_soon_after_its_incident_was_resolved_reopens_it(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    settings = monitor_settings(settings)
    with http_service() as (url, peer):
        await register(api, "cart", url, **SLOW, degraded_incident={"after_checks": 2})
        async with monitoring(temporal_client, engine, settings):
            await wait_until(lambda: up(engine, "cart"), 20, "up while fast")
            peer.delay = DELAY
            await wait_until(lambda: len(incidents_of(engine, "cart")) == 1, 30, "the first spell's incident")
            (incident,) = incidents_of(engine, "cart")
            peer.delay = 0
            await wait_until(lambda: up(engine, "cart"), 20, "fast again")
            await wait_until(lambda: incidents_of(engine, "cart")[0].status != "open", 30, "its playbook started")
            if incidents_of(engine, "cart")[0].status not in ("resolved", "closed"):
                moved = await api.post(f"/api/incidents/{incident.id}/status", json={"status": "resolved"})
                assert moved.status_code == 200, moved.text
            peer.delay = DELAY
            await wait_until(
                lambda: len(events(engine, incident.id, "incident.service_degraded")) == 2, 30, "the second spell"
            )
        assert [i.id for i in incidents_of(engine, "cart")] == [incident.id]
        second = events(engine, incident.id, "incident.service_degraded")[1]
        assert second.data["how"] == "reopened"
        timeline = (await api.get(f"/api/incidents/{incident.id}/timeline")).json()["items"]
        reopened = [e["data"] for e in timeline if e["kind"] == "incident.status" and e["data"]["status"] == "reopened"]
        assert len(reopened) == 1 and reopened[0]["actor"] == "monitor"
        assert reopened[0]["comment"].startswith("monitor: cart is slow again ")


async def test_the_api_refuses_a_bad_degraded_incident_setting_and_answers_a_good_one(api: httpx.AsyncClient) -> None:
    body: dict[str, Any] = {"name": "ledger", "check": {"type": "http", "url": "http://127.0.0.1:9/health"}}
    cases = [
        ({"degraded_incident": {"after_checks": 0}}, "degraded_incident.after_checks"),
        ({"degraded_incident": {"after_checks": "often"}}, "degraded_incident.after_checks"),
        ({"degraded_incident": {"severity": "P9"}}, "degraded_incident.severity"),
        ({"degraded_incident": {"incident_type": "Slow Things"}}, "degraded_incident.incident_type"),
        ({"degraded_incident": {"after": 3}}, "degraded_incident.after"),
        ({"timeout_seconds": 2, "degraded_latency_ms": 2500, "degraded_incident": {}}, "must be below the timeout"),
        ({"degraded_incident": 3}, "degraded_incident"),
    ]
    for extra, message in cases:
        response = await api.post("/api/services", json={**body, **extra})
        assert response.status_code == 422 and message in response.json()["detail"], (extra, response.text)

    created = await api.post("/api/services", json={**body, "degraded_incident": {}})
    assert created.status_code == 201, created.text
    defaults = {"after_checks": 3, "incident_type": "degraded", "severity": "P4"}
    assert created.json()["degraded_incident"] == defaults
    assert (await api.get("/api/services/ledger")).json()["degraded_incident"] == defaults
    changed = await api.put(
        "/api/services/ledger",
        json={"check": body["check"], "degraded_incident": {"after_checks": 10, "severity": "P2"}},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["degraded_incident"] == {**defaults, "after_checks": 10, "severity": "P2"}
    bad = await api.put("/api/services/ledger", json={"check": body["check"], "degraded_incident": {"severity": "P0"}})
    assert bad.status_code == 422 and "degraded_incident.severity" in bad.json()["detail"]
    off = await api.put("/api/services/ledger", json={"check": body["check"], "degraded_incident": None})
    assert off.status_code == 200 and off.json()["degraded_incident"] is None
    other = await api.post("/api/services", json={**body, "name": "ledger-2"})
    assert other.json()["degraded_incident"] is None  # off unless asked for


async def test_a_slow_spells_incident_is_verified_only_once_the_service_is_fast_again(
    temporal_client: Client, engine: Engine, settings: Settings, api: httpx.AsyncClient
) -> None:
    """verify of a slow spell's incident: a pass slower than degraded_latency_ms does not verify it (it resolved such
    an incident within a second while the service stayed slow); a fast one does."""
    settings = monitor_settings(settings, verify_checks=20, verify_interval_seconds=1.0)
    with http_service() as (url, peer):
        await register(api, "search", url, **SLOW, degraded_incident={"after_checks": 2})
        async with monitoring(temporal_client, engine, settings):
            await wait_until(lambda: up(engine, "search"), 20, "up while fast")
            peer.delay = DELAY
            await wait_until(lambda: len(incidents_of(engine, "search")) == 1, 30, "the slow spell's incident")
            await wait_until(lambda: incidents_of(engine, "search")[0].status == "in_progress", 20, "its playbook")
            await asyncio.sleep(4)  # verify keeps checking: slow passes do not resolve it
            (incident,) = incidents_of(engine, "search")
            assert incident.status == "in_progress"
            peer.delay = 0
            await wait_until(lambda: incidents_of(engine, "search")[0].status == "resolved", 30, "verified when fast")
