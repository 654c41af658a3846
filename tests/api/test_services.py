"""The services API on real Postgres: register, validate (422 naming the field), list with filters, change,
remove; the SSRF guard on check URLs; who may change them."""

from __future__ import annotations

from typing import Any

import pytest


def service(name: str = "checkout", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "check": {"type": "http", "url": "http://10.0.0.7:8080/health", "keyword": "ok"},
        "interval_seconds": 30,
        "failure_threshold": 2,
        "log_paths": ["/var/log/checkout/app.log"],
        "metrics_queries": [{"name": "error_rate", "query": "rate(http_errors_total[5m])", "threshold": 0.05}],
        "tags": ["tier:1", "shop"],
        **extra,
    }


async def test_register_list_change_and_remove_services(api):
    await api.post("/api/teams", json={"name": "payments"})
    db = await api.post(
        "/api/services", json=service("postgres", check={"type": "tcp", "host": "10.0.0.9", "port": 5432})
    )
    assert db.status_code == 201, db.text
    created = await api.post("/api/services", json=service(dependencies=["postgres"], team="payments"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["check"] == {
        "type": "http",
        "url": "http://10.0.0.7:8080/health",
        "expect_status_below": 400,
        "keyword": "ok",
        "tls_expiry_days": 14,
    }
    assert (
        body["tags"] == ["shop", "tier:1"] and body["timeout_seconds"] == 5 and body["incident_type"] == "service_down"
    )

    assert [s["name"] for s in (await api.get("/api/services")).json()] == ["checkout", "postgres"]
    assert [s["name"] for s in (await api.get("/api/services", params={"team": "payments"})).json()] == ["checkout"]
    tagged = await api.get("/api/services", params=[("tag", "shop"), ("tag", "tier:1")])
    assert [s["name"] for s in tagged.json()] == ["checkout", "postgres"]
    assert (await api.get("/api/services", params={"tag": "nope"})).json() == []

    again = await api.post("/api/services", json=service())
    assert again.status_code == 409
    in_use = await api.delete("/api/services/postgres")
    assert in_use.status_code == 409 and "checkout depend on postgres" in in_use.text

    changed = service(interval_seconds=120)
    changed.pop("name")
    put = await api.put("/api/services/checkout", json=changed)
    assert put.status_code == 200 and put.json()["interval_seconds"] == 120 and put.json()["dependencies"] == []
    assert (await api.delete("/api/services/postgres")).status_code == 204
    assert (await api.get("/api/services/postgres")).status_code == 404
    audit = (await api.get("/api/audit", params={"target_type": "service"})).json()
    actions = [e["action"] for e in audit.get("items", audit)]
    assert {"service.create", "service.update", "service.delete"} <= set(actions)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"check": {"type": "http", "url": "ftp://x/"}}, "check.http.url"),
        ({"check": {"type": "http", "url": "http://169.254.169.254/latest"}}, "169.254.169.254"),
        ({"check": {"type": "smtp", "host": "x"}}, "check"),
        ({"check": {"type": "tcp", "host": "db", "port": 70000}}, "port"),
        ({"interval_seconds": 0.5}, "interval_seconds"),
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"dependencies": ["ghost"]}, "no service named 'ghost'"),
        ({"dependencies": ["checkout"]}, "cannot depend on itself"),
        ({"log_paths": ["relative.log"]}, "log_paths"),
        ({"tags": ["Has Space"]}, "tags"),
        ({"team": "nobody"}, "no team named 'nobody'"),
        ({"default_playbook": "missing"}, "default_playbook"),
        ({"metrics_queries": [{"name": "a", "query": "up", "threshold": 1}] * 2}, "same name"),
        ({"name": "bad name"}, "name"),
        ({"surprise": True}, "surprise"),
    ],
)
async def test_invalid_services_get_a_422_naming_the_problem(api, change, problem):
    answer = await api.post("/api/services", json={**service(), **change})
    assert answer.status_code == 422, answer.text
    assert problem in answer.text


async def test_viewers_read_responders_change(client_as):
    viewer = await client_as("viewer")
    assert (await viewer.post("/api/services", json=service())).status_code == 403
    responder = await client_as("responder")
    assert (await responder.post("/api/services", json=service())).status_code == 201
    assert [s["name"] for s in (await viewer.get("/api/services")).json()] == ["checkout"]


async def test_a_shorter_interval_brings_the_next_check_forward(api, engine):
    from datetime import datetime, timedelta

    from sqlmodel import Session

    from core.monitoring import ServiceState
    from core.tables import utcnow

    created = (await api.post("/api/services", json=service(interval_seconds=3600))).json()
    far = utcnow() + timedelta(minutes=50)
    with Session(engine) as session:
        session.add(ServiceState(service_id=created["id"], next_check_at=far))
        session.commit()
    body = service(interval_seconds=30)
    body.pop("name")
    changed = await api.put("/api/services/checkout", json=body)
    assert changed.status_code == 200, changed.text
    next_check = datetime.fromisoformat(changed.json()["state"]["next_check_at"])
    assert next_check <= utcnow() + timedelta(seconds=30)
    same = await api.put("/api/services/checkout", json=body | {"description": "x"})
    assert datetime.fromisoformat(same.json()["state"]["next_check_at"]) == next_check  # unchanged interval
