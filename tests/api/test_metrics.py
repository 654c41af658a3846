"""GET /metrics: the database's figures read at scrape time (incidents not ended by status and severity, approvals
waiting), the process's pool, bounded labels only, and METRICS_TOKEN when set."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlmodel import Session

from app.main import create_app
from core.approvals import Approval
from core.settings import DEFAULT_DB_POOL_SIZE
from core.tables import utcnow
from tests.api.incident_rows import insert_incident, insert_incidents
from tests.conftest import app_client


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus text answer."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture(autouse=True)
def no_cache(app):
    app.state.metrics_cache_seconds = 0.0  # read before the app's first scrape builds its registry


async def test_incidents_not_ended_by_status_and_severity(anonymous, engine):
    insert_incidents(
        engine,
        [
            {"status": "open", "severity": "P1", "service": "zebra-shop", "title": "zebra stampede"},
            {"status": "open", "severity": "P1"},
            {"status": "in_progress", "severity": "P2"},
            {"status": "reopened", "severity": "P4"},
            {"status": "resolved", "severity": "P1"},  # ended: not counted
            {"status": "closed", "severity": "P3"},
        ],
    )
    response = await anonymous.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)

    def incidents(status: str, severity: str) -> float:
        return got[("agent_monitor_incidents", (("severity", severity), ("status", status)))]

    assert incidents("open", "P1") == 2
    assert incidents("in_progress", "P2") == 1
    assert incidents("reopened", "P4") == 1
    assert incidents("open", "P3") == 0  # every combination is a series, zero included
    assert not any(labels and dict(labels).get("status") in ("resolved", "closed") for _, labels in got)
    # Bounded labels: no incident, service or title names a series.
    assert "zebra" not in response.text
    assert got[("agent_monitor_db_pool_size", ())] == DEFAULT_DB_POOL_SIZE
    assert got[("agent_monitor_sse_clients", ())] == 0


async def test_approvals_waiting_for_a_person(anonymous, engine):
    incident_id = insert_incident(engine)
    now = utcnow()
    with Session(engine) as session:
        for step, status, asked in (("a", "pending", 600), ("b", "pending", 60), ("c", "approved", 7200)):
            session.add(
                Approval(
                    workflow_id=f"incident-{incident_id}",
                    incident_id=incident_id,
                    step_id=step,
                    agent="remediate",
                    action="restart",
                    risk="high",
                    status=status,
                    requested_at=now - timedelta(seconds=asked),
                    expires_at=now + timedelta(hours=1),
                )
            )
        session.commit()
    got = samples((await anonymous.get("/metrics")).text)
    assert got[("agent_monitor_approvals_pending", ())] == 2
    assert 600 <= got[("agent_monitor_approvals_oldest_pending_seconds", ())] < 900


async def test_metrics_token_when_set(settings, engine, temporal_client):
    guarded = settings.model_copy(update={"metrics_token": SecretStr("s3cret-scrape")})
    app = create_app(guarded, engine=engine, temporal=temporal_client)
    async with app_client(app) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        right = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
        assert right.status_code == 200
        assert "s3cret-scrape" not in right.text and "agent_monitor_incidents" in right.text
