"""Alert payloads as Alertmanager sends them, and what alert ingestion wrote to Postgres."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from core.alerts import IncidentAlert
from core.conversations import ConversationMessage
from core.tables import Event, Incident

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing


def am_alert(
    name: str = "HighLatency",
    *,
    status: str = "firing",
    fingerprint: str = "5f1a2b3c4d5e6f70",
    ends_at: str = ZERO_TIME,
    **labels: str,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "service": "checkout", "severity": "critical", **labels},
        "annotations": {"summary": f"{name} on checkout", "description": "p99 latency above 2s for 5 minutes"},
        "startsAt": "2026-12-01T10:00:00Z",
        "endsAt": ends_at,
        "generatorURL": "http://prometheus.internal:9090/graph?g0.expr=latency",
        "fingerprint": fingerprint,
    }


def am_payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    """An Alertmanager webhook (version 4) carrying the alerts (one firing alert by default)."""
    alerts = alerts or (am_alert(),)
    return {
        "receiver": "agent-monitor",
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "alerts": list(alerts),
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "commonLabels": dict(alerts[0]["labels"]),
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.internal:9093",
        "version": "4",
        "groupKey": '{}:{alertname="HighLatency"}',
        "truncatedAlerts": 0,
    }


def alert_rows(engine, **where: Any) -> list[IncidentAlert]:
    with Session(engine) as session:
        query = select(IncidentAlert).order_by(col(IncidentAlert.id))
        for name, value in where.items():
            query = query.where(getattr(IncidentAlert, name) == value)
        return list(session.exec(query))


def incident_ids(engine) -> list[int]:
    with Session(engine) as session:
        return [i for i in session.exec(select(Incident.id).order_by(col(Incident.id))) if i is not None]


def tool_messages(engine, incident_id: int) -> list[str]:
    with Session(engine) as session:
        query = select(ConversationMessage.content).where(
            ConversationMessage.incident_id == incident_id, ConversationMessage.role == "tool"
        )
        return list(session.exec(query.order_by(col(ConversationMessage.id))))


def event_kinds(engine, incident_id: int, prefix: str = "alert.") -> list[str]:
    with Session(engine) as session:
        query = select(Event.kind).where(Event.incident_id == incident_id, col(Event.kind).startswith(prefix))
        return list(session.exec(query.order_by(col(Event.id))))
