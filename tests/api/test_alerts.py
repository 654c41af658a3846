"""Alert webhooks on the real app, Postgres and Temporal: incidents opened through the incidents' own code path,
repeats attached (also when ten arrive at once), resolved notifications recorded, auth, validation, Grafana's
signature, the generic format, and routing rules."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import SecretStr
from sqlalchemy import event
from temporalio.client import WorkflowExecutionStatus

from core.alerts import ReceivedAlert, fingerprint_of, route_alert
from core.audit import SYSTEM
from services.alerts import record_firing
from tests.api.alert_rows import alert_rows, am_alert, am_payload, event_kinds, incident_ids, tool_messages
from tests.factories import wait_for_workflow

AM = "/api/alerts/alertmanager"
GRAFANA = "/api/alerts/grafana"
GENERIC = "/api/alerts/generic"


async def post_ok(client, path: str, payload: dict) -> list[dict]:
    response = await client.post(path, json=payload)
    assert response.status_code == 200, response.text
    return response.json()["incidents"]


async def test_a_firing_alert_opens_an_incident_and_starts_its_workflow(client_as, engine, temporal_client):
    alertmanager = await client_as("responder", "alertmanager")
    [outcome] = await post_ok(alertmanager, AM, am_payload())
    assert outcome["action"] == "opened" and outcome["fingerprint"] == "5f1a2b3c4d5e6f70"

    incident = (await alertmanager.get(f"/api/incidents/{outcome['incident_id']}")).json()
    assert incident["title"] == "HighLatency on checkout"
    assert (incident["service"], incident["severity"], incident["incident_type"]) == ("checkout", "P1", "alert")
    assert incident["description"].startswith("p99 latency above 2s for 5 minutes\n\nSource: http://prometheus")
    assert "  severity=critical" in incident["description"]
    description = await temporal_client.get_workflow_handle(incident["workflow_id"]).describe()
    assert description.status == WorkflowExecutionStatus.RUNNING

    [message] = tool_messages(engine, incident["id"])
    assert message.startswith(
        "alert HighLatency firing since 2026-12-01T10:00:00+00:00 (alertmanager, 5f1a2b3c4d5e6f70)"
    )
    assert "  service=checkout" in message and "  summary: HighLatency on checkout" in message
    timeline = (await alertmanager.get(f"/api/incidents/{incident['id']}/timeline")).json()["items"]
    kinds = [e["kind"] for e in timeline]
    assert kinds[0] == "incident.created" and "alert.firing" in kinds and "message.created" in kinds
    firing = next(e for e in timeline if e["kind"] == "alert.firing")
    assert firing["data"] == {
        "actor": "alertmanager",
        "source": "alertmanager",
        "fingerprint": "5f1a2b3c4d5e6f70",
        "alertname": "HighLatency",
        "again": False,
    }
    [row] = alert_rows(engine)
    assert (row.status, row.receive_count, row.ends_at, row.incident_id) == ("firing", 1, None, incident["id"])
    assert row.generator_url == "http://prometheus.internal:9090/graph?g0.expr=latency"


async def test_repeats_attach_and_resolved_is_recorded_without_resolving_the_incident(api, engine):
    [opened] = await post_ok(api, AM, am_payload())
    incident_id = opened["incident_id"]
    [again] = await post_ok(api, AM, am_payload())
    assert again == {**opened, "action": "attached"}
    assert alert_rows(engine)[0].receive_count == 2
    assert event_kinds(engine, incident_id) == ["alert.firing"]  # a repeat is counted, not announced

    resolved = am_alert(status="resolved", ends_at="2026-12-01T10:30:00Z")
    [outcome] = await post_ok(api, AM, am_payload(resolved))
    assert outcome == {**opened, "action": "resolved"}
    [row] = alert_rows(engine)
    assert (row.status, row.ends_at.isoformat(), row.receive_count) == ("resolved", "2026-12-01T10:30:00+00:00", 3)
    assert event_kinds(engine, incident_id) == ["alert.firing", "alert.resolved"]
    assert tool_messages(engine, incident_id)[-1] == (
        "alert HighLatency resolved at 2026-12-01T10:30:00+00:00 (alertmanager, 5f1a2b3c4d5e6f70)"
    )
    assert (await api.get(f"/api/incidents/{incident_id}")).json()["status"] == "open"
    await post_ok(api, AM, am_payload(resolved))  # a repeated resolved notification changes nothing more
    assert event_kinds(engine, incident_id) == ["alert.firing", "alert.resolved"]

    [refired] = await post_ok(api, AM, am_payload())
    assert refired == {**opened, "action": "attached"}
    assert (alert_rows(engine)[0].status, alert_rows(engine)[0].ends_at) == ("firing", None)
    assert event_kinds(engine, incident_id) == ["alert.firing", "alert.resolved", "alert.firing"]
    assert "firing again" in tool_messages(engine, incident_id)[-1]


async def test_an_alert_firing_after_its_incident_ended_opens_a_new_one(api, engine):
    [first] = await post_ok(api, AM, am_payload())
    moved = await api.post(f"/api/incidents/{first['incident_id']}/status", json={"status": "resolved"})
    assert moved.status_code == 200, moved.text
    [second] = await post_ok(api, AM, am_payload())
    assert second["action"] == "opened" and second["incident_id"] != first["incident_id"]
    [again] = await post_ok(api, AM, am_payload())
    assert again == {**second, "action": "attached"}
    [resolved] = await post_ok(api, AM, am_payload(am_alert(status="resolved", ends_at="2026-12-01T11:00:00Z")))
    assert resolved["incident_id"] == second["incident_id"]  # the latest episode
    assert [r.status for r in alert_rows(engine)] == ["firing", "resolved"]

    await api.post(f"/api/incidents/{second['incident_id']}/status", json={"status": "resolved"})
    await api.post(f"/api/incidents/{second['incident_id']}/status", json={"status": "closed"})
    [third] = await post_ok(api, AM, am_payload())
    assert third["action"] == "opened" and len(incident_ids(engine)) == 3


async def test_resolved_for_an_alert_never_seen_is_ignored(api, engine):
    payload = am_payload(am_alert(status="resolved", ends_at="2026-12-01T11:00:00Z", fingerprint="0000beef"))
    assert await post_ok(api, AM, payload) == [{"incident_id": None, "fingerprint": "0000beef", "action": "ignored"}]
    assert incident_ids(engine) == [] and alert_rows(engine) == []


async def test_ten_identical_alerts_at_once_open_one_incident(api, engine, temporal_client):
    responses = await asyncio.gather(*[api.post(AM, json=am_payload()) for _ in range(10)])
    assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
    outcomes = [r.json()["incidents"][0] for r in responses]
    assert sorted(o["action"] for o in outcomes) == ["attached"] * 9 + ["opened"]
    assert len({o["incident_id"] for o in outcomes}) == 1
    assert len(incident_ids(engine)) == 1
    [row] = alert_rows(engine)
    assert row.receive_count == 10
    assert event_kinds(engine, row.incident_id) == ["alert.firing"]
    assert len(tool_messages(engine, row.incident_id)) == 1
    workflow_id = (await api.get(f"/api/incidents/{row.incident_id}")).json()["workflow_id"]
    assert (await temporal_client.get_workflow_handle(workflow_id).describe()).status == WorkflowExecutionStatus.RUNNING


class Interleaving:
    """Runs `first` on this thread and, just before its statement number `position` (when it is not inside a
    write: then the second would only wait for its locks), `second` whole on another thread."""

    def __init__(self, engine, position: int) -> None:
        self.engine, self.position, self.thread = engine, position, threading.get_ident()
        self.seen: list[str] = []
        self.writing = False
        self.second_result = None

    def run(self, first, second):
        self.second = second
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "commit", self._committed)
        try:
            return first()
        finally:
            event.remove(self.engine, "before_cursor_execute", self._before)
            event.remove(self.engine, "commit", self._committed)

    def _before(self, conn, cursor, statement, parameters, context, executemany):  # noqa: ARG002 (the event's)
        if threading.get_ident() != self.thread:
            return
        self.seen.append(statement.split(None, 1)[0])
        if not self.writing and self.second_result is None and len(self.seen) - 1 == self.position:
            with ThreadPoolExecutor(1) as pool:
                self.second_result = pool.submit(self.second).result(timeout=30)
        self.writing = self.writing or self.seen[-1] in ("INSERT", "UPDATE", "DELETE")

    def _committed(self, conn) -> None:  # noqa: ARG002
        if threading.get_ident() == self.thread:
            self.writing = False


def test_a_request_landing_between_any_two_statements_of_another_opens_no_second_incident(engine, settings):
    """The ten-at-once test leaves the interleaving to chance; this one walks it, statement by statement."""
    routed = route_alert({"alertname": "HighLatency"}, [])

    def fire(fingerprint: str):
        alert = ReceivedAlert(
            source="alertmanager", fingerprint=fingerprint, status="firing", labels={"alertname": "HighLatency"}
        )
        return record_firing(engine=engine, alert=alert, routed=routed, settings=settings, actor=SYSTEM)

    walked = []
    for position in range(40):
        fingerprint = f"race{position:04d}"
        walk = Interleaving(engine, position)
        first = walk.run(lambda f=fingerprint: fire(f), lambda f=fingerprint: fire(f))
        if position >= len(walk.seen):
            break  # past the first request's last statement
        if walk.second_result is None:
            continue  # inside a write
        walked.append(position)
        actions = sorted([first.outcome.action, walk.second_result.outcome.action])
        assert actions == ["attached", "opened"], (position, walk.seen, actions)
        assert first.outcome.incident_id == walk.second_result.outcome.incident_id, (position, walk.seen)
        [row] = alert_rows(engine, fingerprint=fingerprint)
        assert row.receive_count == 2
    # both ways round: before the first request opens the incident, and once it has (then it only attaches)
    assert walked[:2] == [0, 1] and walked[-1] > 10, walked


def storm(tag: str, repeats: int) -> list[dict]:
    """A repeated as is, B once, A twice more, then A resolved twice: as a misbehaving source sends them."""
    a, b = am_alert(fingerprint=f"{tag}0a"), am_alert(fingerprint=f"{tag}0b", instance="web-2")
    resolved = am_alert(fingerprint=f"{tag}0a", status="resolved", ends_at="2026-12-01T10:30:00Z")
    return [a] * repeats + [b] + [a] * 2 + [resolved] * 2


async def test_repeats_in_one_notification_are_recorded_once_with_the_same_outcome_as_one_at_a_time(api, engine):
    outcomes = await post_ok(api, AM, am_payload(*storm("feed", 995)))  # 1,000 alerts: the most one may carry
    a, b = outcomes[0]["incident_id"], outcomes[995]["incident_id"]
    assert [o["action"] for o in outcomes] == ["opened"] + ["attached"] * 994 + ["opened"] + ["attached"] * 2 + [
        "resolved"
    ] * 2
    assert {o["incident_id"] for i, o in enumerate(outcomes) if i != 995} == {a} and b != a
    rows = {row.fingerprint: row for row in alert_rows(engine)}
    assert (rows["feed0a"].receive_count, rows["feed0a"].status, rows["feed0b"].receive_count) == (999, "resolved", 1)
    assert event_kinds(engine, a) == ["alert.firing", "alert.resolved"] and len(tool_messages(engine, a)) == 2

    # The same sequence one alert per notification: the same answers, counts, events and messages.
    one_by_one = [(await post_ok(api, AM, am_payload(alert)))[0] for alert in storm("cafe", 20)]
    c, d = one_by_one[0]["incident_id"], one_by_one[20]["incident_id"]
    at_once = await post_ok(api, AM, am_payload(*storm("beef", 20)))
    e, f = at_once[0]["incident_id"], at_once[20]["incident_id"]
    renamed = {c: e, d: f}
    assert [{**o, "incident_id": renamed[o["incident_id"]], "fingerprint": o["fingerprint"].replace("cafe", "beef")}
            for o in one_by_one] == at_once  # fmt: skip
    rows = {row.fingerprint: row for row in alert_rows(engine)}
    for suffix in ("0a", "0b"):
        assert (rows["cafe" + suffix].receive_count, rows["cafe" + suffix].status) == (
            rows["beef" + suffix].receive_count, rows["beef" + suffix].status)  # fmt: skip
    assert event_kinds(engine, c) == event_kinds(engine, e)
    assert [m.replace("cafe", "beef") for m in tool_messages(engine, c)] == tool_messages(engine, e)


async def test_one_notification_with_several_alerts(api, engine):
    payload = am_payload(
        am_alert(fingerprint="aaaa0001", instance="web-1"),
        am_alert(fingerprint="aaaa0002", instance="web-2"),
        am_alert(fingerprint="aaaa0003", status="resolved", ends_at="2026-12-01T10:05:00Z"),
    )
    outcomes = await post_ok(api, AM, payload)
    assert [(o["fingerprint"], o["action"]) for o in outcomes] == [
        ("aaaa0001", "opened"),
        ("aaaa0002", "opened"),
        ("aaaa0003", "ignored"),
    ]
    assert len(incident_ids(engine)) == 2


async def test_the_agents_see_the_alert(api, engine, temporal_client, worker):
    [opened] = await post_ok(api, AM, am_payload())
    workflow_id = f"incident-{opened['incident_id']}"
    await wait_for_workflow(temporal_client, workflow_id)
    context = (await api.get(f"/api/workflows/{workflow_id}/steps/monitor/contexts/1")).json()["context"]
    contents = [m["content"] for m in context["conversation"]["messages"] if m["role"] == "tool"]
    assert any(c.startswith("alert HighLatency firing") and "  severity=critical" in c for c in contents)


async def test_who_may_post_alerts(anonymous, client_as):
    viewer = await client_as("viewer")
    for path in (AM, GRAFANA, GENERIC):
        assert (await anonymous.post(path, json=am_payload())).status_code == 401, path
        forbidden = await viewer.post(path, json=am_payload())
        assert forbidden.status_code == 403 and "responder" in forbidden.json()["detail"], path


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p.pop("alerts"), "alerts"),
        (lambda p: p.update(alerts=[]), "alerts"),
        (lambda p: p.update(version="3"), "version"),
        (lambda p: p["alerts"][0].update(status="pending"), "alerts.0.status"),
        (lambda p: p["alerts"][0].pop("labels"), "alerts.0.labels"),
        (lambda p: p["alerts"][0].update(labels={}), "alerts.0.labels"),
        (lambda p: p["alerts"][0].update(startsAt="yesterday"), "alerts.0.startsAt"),
        (lambda p: p["alerts"][0]["labels"].update(job="a\x00b"), "alerts.0.labels.job"),
        (lambda p: p["alerts"][0].update(fingerprint=""), "alerts.0.fingerprint"),
    ],
)
async def test_malformed_alertmanager_payloads_are_422_naming_the_field(api, engine, change, field):
    payload = am_payload()
    change(payload)
    response = await api.post(AM, json=payload)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field
    assert incident_ids(engine) == []


async def test_bodies_that_are_not_alerts(api, engine):
    assert (await api.post(AM, content=b"{nope", headers={"Content-Type": "application/json"})).status_code == 422
    huge = am_payload()
    huge["alerts"][0]["annotations"]["description"] = "x" * (1024 * 1024 + 1)
    too_big = await api.post(AM, json=huge)
    assert too_big.status_code == 413 and "larger than" in too_big.json()["detail"]
    unknown_fields = am_payload()
    unknown_fields["somethingNew"] = {"nested": True}
    unknown_fields["alerts"][0]["silenceURL"] = "http://am/silence"
    assert (await api.post(AM, json=unknown_fields)).status_code == 200
    assert len(incident_ids(engine)) == 1


def grafana_payload(**alert_fields) -> dict:
    alert = {
        **am_alert("DiskAlmostFull", fingerprint="9d8c7b6a5f4e3d2c"),
        "silenceURL": "http://grafana/alerting/silence/new",
        "dashboardURL": "",
        "panelURL": "",
        "values": {"B": 97.5},
        "valueString": "[ var='B' labels={instance=db-1} value=97.5 ]",
        **alert_fields,
    }
    return {
        "receiver": "agent-monitor",
        "status": "firing",
        "orgId": 1,
        "alerts": [alert],
        "groupLabels": {"alertname": "DiskAlmostFull"},
        "commonLabels": alert["labels"],
        "commonAnnotations": {},
        "externalURL": "http://grafana.internal:3000/",
        "version": "1",
        "groupKey": '{}/{}:{alertname="DiskAlmostFull"}',
        "truncatedAlerts": 0,
        "title": "[FIRING:1] DiskAlmostFull",
        "state": "alerting",
        "message": "**Firing**\n\nValue: B=97.5",
    }


def sign(secret: str, body: bytes, stamp: str | None = None) -> str:
    signed = f"{stamp}:".encode() + body if stamp else body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


async def test_grafana_alerts_unsigned_and_signed(api, client_as, engine, settings):
    [outcome] = await post_ok(api, GRAFANA, grafana_payload())
    assert outcome["action"] == "opened" and outcome["fingerprint"] == "9d8c7b6a5f4e3d2c"
    [message] = tool_messages(engine, outcome["incident_id"])
    assert message.startswith("alert DiskAlmostFull firing") and "values: [ var='B'" in message
    assert [r.source for r in alert_rows(engine)] == ["grafana"]

    settings.grafana_webhook_secret = SecretStr("grafana-shared-secret")
    body = json.dumps(grafana_payload()).encode()
    headers = {"Content-Type": "application/json"}
    missing = await api.post(GRAFANA, content=body, headers=headers)
    assert missing.status_code == 401 and "X-Grafana-Alerting-Signature" in missing.json()["detail"]
    wrong = {**headers, "X-Grafana-Alerting-Signature": sign("another-secret", body)}
    assert (await api.post(GRAFANA, content=body, headers=wrong)).status_code == 401
    right = {**headers, "X-Grafana-Alerting-Signature": sign("grafana-shared-secret", body)}
    signed = await api.post(GRAFANA, content=body, headers=right)
    assert signed.status_code == 200 and signed.json()["incidents"][0]["action"] == "attached"
    tampered = body.replace(b"97.5", b"12.0")
    assert (await api.post(GRAFANA, content=tampered, headers=right)).status_code == 401

    stamp = str(int(time.time()))
    with_time = {
        **headers,
        "X-Grafana-Alerting-Timestamp": stamp,
        "X-Grafana-Alerting-Signature": sign("grafana-shared-secret", body, stamp),
    }
    assert (await api.post(GRAFANA, content=body, headers=with_time)).status_code == 200
    old = str(int(time.time()) - 3600)
    replayed = {**with_time, "X-Grafana-Alerting-Timestamp": old}
    replayed["X-Grafana-Alerting-Signature"] = sign("grafana-shared-secret", body, old)
    assert (await api.post(GRAFANA, content=body, headers=replayed)).status_code == 401
    viewer = await client_as("viewer")  # the signature does not stand in for the API token
    assert (await viewer.post(GRAFANA, content=body, headers=right)).status_code == 403


async def test_generic_alerts_fingerprint_their_sorted_labels(api, engine):
    labels = {"alertname": "QueueBacklog", "queue": "orders", "service": "billing"}
    first = {"source": "nagios", "alerts": [{"status": "firing", "labels": labels, "annotations": {}}]}
    [opened] = await post_ok(api, GENERIC, first)
    assert opened["action"] == "opened" and opened["fingerprint"] == fingerprint_of(labels)
    reordered = {"source": "nagios", "alerts": [{"status": "firing", "labels": dict(reversed(labels.items()))}]}
    assert (await post_ok(api, GENERIC, reordered))[0] == {**opened, "action": "attached"}
    other_source = {"source": "zabbix", "alerts": [{"status": "firing", "labels": labels}]}
    assert (await post_ok(api, GENERIC, other_source))[0]["action"] == "opened"  # dedupe is per source
    chosen = {
        "source": "nagios",
        "alerts": [{"status": "resolved", "fingerprint": opened["fingerprint"], "labels": labels,
                    "ends_at": "2026-12-01T12:00:00+00:00"}],
    }  # fmt: skip
    assert (await post_ok(api, GENERIC, chosen))[0] == {**opened, "action": "resolved"}
    incident = (await api.get(f"/api/incidents/{opened['incident_id']}")).json()
    assert (incident["title"], incident["service"], incident["severity"]) == (
        "QueueBacklog (queue=orders, service=billing)",
        "billing",
        "P3",
    )
    bad = await api.post(GENERIC, json={"source": "Not A Source", "alerts": first["alerts"]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "source"


async def test_alert_routes_crud_validation_and_who_may_change_them(api, client_as):
    route = {"name": "db", "priority": 10, "matchers": [{"label": "team", "op": "=~", "value": "db|dba"}]}
    created = await api.post("/api/alert-routes", json=route)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["incident_type"] == "alert" and body["drop"] is False and body["created_by"] == "root"
    assert (await api.post("/api/alert-routes", json=route)).status_code == 409

    viewer, responder = await client_as("viewer"), await client_as("responder")
    assert [r["name"] for r in (await viewer.get("/api/alert-routes")).json()] == ["db"]
    assert (await viewer.get(f"/api/alert-routes/{body['id']}")).json()["matchers"][0]["value"] == "db|dba"
    assert (await responder.post("/api/alert-routes", json={**route, "name": "other"})).status_code == 403
    assert (await responder.delete(f"/api/alert-routes/{body['id']}")).status_code == 403

    for change, field in [
        ({"matchers": [{"label": "team", "op": "=~", "value": "(db"}]}, "matchers.0.value"),
        ({"matchers": [{"label": "team", "op": "=~", "value": "a" * 1001}]}, "matchers.0.value"),
        ({"matchers": [{"label": "team", "op": "~="}]}, "matchers.0.op"),
        ({"playbook_id": "no-such-playbook"}, "playbook_id"),
        ({"severity_map": {"critical": "P0"}}, "severity_map.critical"),
        ({"service": "bad service"}, "service"),
        ({"unknown": 1}, "unknown"),
    ]:
        response = await api.post("/api/alert-routes", json={**route, "name": "bad", **change})
        assert response.status_code == 422, (change, response.text)
        assert response.json()["errors"][0]["field"] == field, (change, response.json())

    put = await api.put(f"/api/alert-routes/{body['id']}", json={**route, "service": "postgres"})
    assert put.status_code == 200 and put.json()["service"] == "postgres"
    assert (await api.get("/api/alert-routes/999999")).status_code == 404
    assert (await api.delete(f"/api/alert-routes/{body['id']}")).status_code == 204
    assert (await api.get("/api/alert-routes")).json() == []
    audit = (await api.get("/api/audit", params={"target_type": "alert_route"})).json()
    actions = [e["action"] for e in audit.get("items", audit)]
    assert sorted(actions) == ["alert_route.create", "alert_route.delete", "alert_route.update"]


async def test_routes_decide_service_severity_type_playbook_or_drop(api, engine):
    playbook = {
        "id": "db-runbook",
        "name": "db",
        "incident_type": "database",
        "steps": [{"id": "look", "agent": "noop"}],
    }
    assert (await api.post("/api/playbooks", json=playbook)).status_code == 201
    routes = [
        {"name": "watchdog", "priority": 0, "drop": True, "matchers": [{"label": "alertname", "value": "Watchdog"}]},
        {"name": "db", "priority": 10, "matchers": [{"label": "team", "value": "db"}], "service": "postgres",
         "severity_map": {"page": "P1"}, "incident_type": "database", "playbook_id": "db-runbook"},
        {"name": "by-namespace", "priority": 20, "service_label": "namespace"},
    ]  # fmt: skip
    for route in routes:
        assert (await api.post("/api/alert-routes", json=route)).status_code == 201

    payload = am_payload(
        am_alert("Watchdog", fingerprint="00000001"),
        am_alert("ReplicationLag", fingerprint="00000002", team="db", severity="page"),
        am_alert("PodCrashLooping", fingerprint="00000003", namespace="payments", severity="warning"),
        am_alert("Watchdog", fingerprint="00000001", status="resolved", ends_at="2026-12-01T10:01:00Z"),
    )
    outcomes = await post_ok(api, AM, payload)
    assert [o["action"] for o in outcomes] == ["dropped", "opened", "opened", "dropped"]
    db = (await api.get(f"/api/incidents/{outcomes[1]['incident_id']}")).json()
    assert (db["service"], db["severity"], db["incident_type"], db["playbook_id"]) == (
        "postgres",
        "P1",
        "database",
        "db-runbook",
    )
    pods = (await api.get(f"/api/incidents/{outcomes[2]['incident_id']}")).json()
    assert (pods["service"], pods["severity"], pods["incident_type"]) == ("payments", "P3", "alert")
    assert len(alert_rows(engine)) == 2


async def test_the_incident_page_shows_alert_events_escaped(api):
    payload = am_payload(am_alert("<script>alert(1)</script>", fingerprint="0000dead"))
    [opened] = await post_ok(api, AM, payload)
    await post_ok(api, AM, am_payload(am_alert("<script>alert(1)</script>", fingerprint="0000dead", status="resolved")))
    page = await api.get(f"/incidents/{opened['incident_id']}")
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "Alert <strong>&lt;script&gt;alert(1)&lt;/script&gt;</strong> firing (alertmanager, 0000dead)" in page.text
    assert "Alert <strong>&lt;script&gt;alert(1)&lt;/script&gt;</strong> resolved at" in page.text


async def register_healthy(api, url: str) -> None:
    """checkout registered with a check that passes from here (the alert says what we cannot see)."""
    body = {"name": "checkout", "check": {"type": "http", "url": url}, "interval_seconds": 3600, "enabled": False}
    created = await api.post("/api/services", json=body)
    assert created.status_code == 201, created.text


async def test_an_alerts_incident_stays_open_while_it_fires_and_its_source_resolves_it(api, engine, temporal_client,
                                                                                       worker, service):  # fmt: skip
    """Finding 3 of issue 19: the default chain resolved the incident in a second while the alert still fired (the
    service looks healthy from here), so each repeat of the alert opened the next incident."""
    await register_healthy(api, service[0])
    [opened] = await post_ok(api, AM, am_payload())
    incident_id = opened["incident_id"]
    workflow_id = (await api.get(f"/api/incidents/{incident_id}")).json()["workflow_id"]
    outcome, _ = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"
    detail = await wait_until(api, incident_id, lambda d: (d["workflow"] or {}).get("status") == "completed")
    assert detail["status"] == "in_progress" and detail["resolved_at"] is None  # the alert still fires

    for _ in range(5):  # Alertmanager repeats a firing alert
        [again] = await post_ok(api, AM, am_payload())
        assert again == {**opened, "action": "attached"}
    assert incident_ids(engine) == [incident_id]

    [outcome] = await post_ok(api, AM, am_payload(am_alert(status="resolved", ends_at="2026-12-01T10:30:00Z")))
    assert outcome["action"] == "resolved"
    detail = await wait_until(api, incident_id, lambda d: d["status"] == "resolved")
    timeline = (await api.get(f"/api/incidents/{incident_id}/timeline")).json()["items"]
    moves = [(e["data"]["actor"], e["data"]["status"]) for e in timeline if e["kind"] == "incident.status"]
    assert moves == [("workflow", "in_progress"), ("root", "resolved")]
    resolved = next(e for e in timeline if e["kind"] == "incident.status" and e["data"]["status"] == "resolved")
    assert resolved["data"]["comment"] == "alertmanager says HighLatency has resolved"


async def test_an_alert_resolved_before_its_run_ends_lets_the_run_resolve_the_incident(api, engine, temporal_client,
                                                                                       settings, service):  # fmt: skip
    from worker.runner import incident_worker

    await register_healthy(api, service[0])
    [opened] = await post_ok(api, AM, am_payload())  # no worker yet: the run cannot move
    await post_ok(api, AM, am_payload(am_alert(status="resolved", ends_at="2026-12-01T10:30:00Z")))
    incident_id = opened["incident_id"]
    assert (await api.get(f"/api/incidents/{incident_id}")).json()["status"] == "open"  # its run has not run
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        detail = await wait_until(api, incident_id, lambda d: d["status"] == "resolved")
    assert detail["workflow"]["status"] == "completed"


async def wait_until(api, incident_id: int, check, timeout: float = 30) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        detail = (await api.get(f"/api/incidents/{incident_id}")).json()
        if check(detail):
            return detail
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"incident {incident_id} never got there: {detail}")
        await asyncio.sleep(0.05)
