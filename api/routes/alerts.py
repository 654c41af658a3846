"""Alert webhooks (Alertmanager, Grafana, generic) and the routing rules that turn alerts into incidents.
See docs/alerts.md."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio.client import Client

from api.auth import Admin, Principal, Responder, actor_of, require
from api.deps import EngineDep, Int64Id, SessionDep, SettingsDep, TemporalDep
from core.alerts import AlertRoute, AlertRouteBase, AlertRouteCreate, ReceivedAlert
from core.audit import record_audit
from core.settings import Settings
from core.tables import utcnow
from services.alert_payloads import AlertmanagerWebhook, AlertsAccepted, GenericAlerts, GrafanaWebhook
from services.alerts import ingest_alerts
from services.playbooks import PlaybookNotFound, load_playbook

router = APIRouter(prefix="/api/alerts", tags=["alerts"], dependencies=[require("responder")])
routes = APIRouter(prefix="/api/alert-routes", tags=["alert routes"], dependencies=[require("viewer")])

SIGNATURE_HEADER = "X-Grafana-Alerting-Signature"
TIMESTAMP_HEADER = "X-Grafana-Alerting-Timestamp"  # when the contact point is told to send one
TIMESTAMP_TOLERANCE = 300  # seconds: a signed request older (or newer) than this is a replay


async def grafana_signature(request: Request) -> None:
    """With GRAFANA_WEBHOOK_SECRET set, the body must carry Grafana's HMAC-SHA256 signature (hex), 401 otherwise.
    With a timestamp header the signature covers `<timestamp>:<body>` and the timestamp must be recent."""
    settings: Settings = request.app.state.settings
    secret = settings.grafana_webhook_secret.get_secret_value()
    if not secret:
        return
    body = await request.body()
    stamp = request.headers.get(TIMESTAMP_HEADER)
    signed = body
    if stamp is not None:
        if not stamp.isdigit() or abs(time.time() - int(stamp[:12])) > TIMESTAMP_TOLERANCE:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"{TIMESTAMP_HEADER} is not a recent Unix time")
        signed = stamp.encode() + b":" + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    sent = request.headers.get(SIGNATURE_HEADER, "").strip().lower()
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"missing or wrong {SIGNATURE_HEADER} (HMAC-SHA256 of the body, hex)"
        )


async def _ingest(
    request: Request,
    principal: Principal,
    engine: Engine,
    temporal: Client,
    settings: Settings,
    alerts: list[ReceivedAlert],
) -> AlertsAccepted:
    # WorkflowsNotStarted is a 503 (Temporal is down): Alertmanager sends the notification again.
    return await ingest_alerts(
        engine=engine, temporal=temporal, settings=settings, actor=actor_of(request, principal), alerts=alerts
    )


@router.post("/alertmanager", response_model=AlertsAccepted)
async def alertmanager_webhook(
    request: Request,
    body: AlertmanagerWebhook,
    principal: Responder,
    engine: EngineDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> AlertsAccepted:
    """Alertmanager's webhook (version 4): each firing alert opens an incident or attaches to its open one;
    resolved ones are recorded on their incident."""
    return await _ingest(request, principal, engine, temporal, settings, body.received())


@router.post("/grafana", response_model=AlertsAccepted, dependencies=[Depends(grafana_signature)])
async def grafana_webhook(
    request: Request,
    body: GrafanaWebhook,
    principal: Responder,
    engine: EngineDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> AlertsAccepted:
    """Grafana unified alerting's webhook contact point (signed when GRAFANA_WEBHOOK_SECRET is set)."""
    return await _ingest(request, principal, engine, temporal, settings, body.received())


@router.post("/generic", response_model=AlertsAccepted)
async def generic_alerts(
    request: Request,
    body: GenericAlerts,
    principal: Responder,
    engine: EngineDep,
    temporal: TemporalDep,
    settings: SettingsDep,
) -> AlertsAccepted:
    """Alerts in our own format: {"source", "alerts": [{"status", "fingerprint"?, "labels", "annotations", …}]}."""
    return await _ingest(request, principal, engine, temporal, settings, body.received())


class AlertRoutePublic(AlertRouteCreate):
    id: int
    created_by: str
    updated_at: str


def route_public(row: AlertRoute) -> dict[str, Any]:
    return row.model_dump(mode="json", exclude={"created_at"})


def _checked(session: Session, settings: Settings, body: AlertRouteBase) -> None:
    if body.playbook_id:
        try:
            load_playbook(session=session, settings=settings, playbook_id=body.playbook_id, version=None)
        except PlaybookNotFound as err:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"playbook_id: {err}") from None


def _get(session: Session, route_id: int, *, lock: bool = False) -> AlertRoute:
    query = select(AlertRoute).where(AlertRoute.id == route_id)
    row = session.exec(query.with_for_update() if lock else query).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"alert route {route_id} does not exist")
    return row


@routes.get("", response_model=list[AlertRoutePublic])
def list_routes(session: SessionDep) -> list[dict[str, Any]]:
    """Every routing rule, in the order they are tried (priority, then id)."""
    rows = session.exec(select(AlertRoute).order_by(col(AlertRoute.priority), col(AlertRoute.id)))
    return [route_public(row) for row in rows]


@routes.get("/{route_id}", response_model=AlertRoutePublic)
def get_route(route_id: Int64Id, session: SessionDep) -> dict[str, Any]:
    return route_public(_get(session, route_id))


@routes.post("", status_code=status.HTTP_201_CREATED, response_model=AlertRoutePublic)
def create_route(
    request: Request, body: AlertRouteCreate, principal: Admin, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """Add a routing rule (admin)."""
    _checked(session, settings, body)
    row = AlertRoute(**body.model_dump(mode="json"), created_by=principal.username)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, f"an alert route named {body.name!r} exists") from None
    record_audit(
        session, actor=actor_of(request, principal), action="alert_route.create", target_type="alert_route",
        target_id=row.id, after=body.model_dump(mode="json"),
    )  # fmt: skip
    session.commit()
    session.refresh(row)
    return route_public(row)


@routes.put("/{route_id}", response_model=AlertRoutePublic)
def replace_route(
    request: Request, route_id: Int64Id, body: AlertRouteCreate, principal: Admin, session: SessionDep,
    settings: SettingsDep,
) -> dict[str, Any]:  # fmt: skip
    """Change a routing rule, the whole of it (admin)."""
    row = _get(session, route_id, lock=True)
    _checked(session, settings, body)
    before = row.rule().model_dump(mode="json")
    for name, value in body.model_dump(mode="json").items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, f"an alert route named {body.name!r} exists") from None
    record_audit(
        session, actor=actor_of(request, principal), action="alert_route.update", target_type="alert_route",
        target_id=route_id, before=before, after=body.model_dump(mode="json"),
    )  # fmt: skip
    session.commit()
    session.refresh(row)
    return route_public(row)


@routes.delete("/{route_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_route(request: Request, route_id: Int64Id, principal: Admin, session: SessionDep) -> None:
    row = _get(session, route_id, lock=True)
    record_audit(
        session, actor=actor_of(request, principal), action="alert_route.delete", target_type="alert_route",
        target_id=route_id, before=row.rule().model_dump(mode="json"),
    )  # fmt: skip
    session.delete(row)
    session.commit()
