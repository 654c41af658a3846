"""Reading an incident: its row and its projected workflow state (the detail the API and the page show);
assigning it. Opening one is services/incidents/open.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from core.audit import Actor, record_audit
from core.db import autocommit_session, on_pool, session_scope
from core.errors import Invalid, NotFound
from core.events import incident_event
from core.identity import Team, User
from core.settings import Settings
from core.tables import Incident, WorkflowRun, WorkflowStep, utcnow
from services.collaboration import links_of
from services.schemas import IncidentDetail, IncidentPublic, LinkPublic, StepPublic, WorkflowPublic


class IncidentNotFound(NotFound):
    pass


T = TypeVar("T")


async def in_session(engine: Engine, work: Callable[[Session], T]) -> T:
    """Run `work` in a worker thread with a session that commits, and give the connection back before returning.

    A sync route holding its SessionDep connection until the response is validated (another threadpool hop)
    deadlocks once every thread waits for the pool and every pooled connection waits for a thread; routes
    that many clients hit at once use this instead.
    """

    def run() -> T:
        with session_scope(engine) as session:
            return work(session)

    return await on_pool(engine, run)


async def in_read_session(engine: Engine, work: Callable[[Session], T]) -> T:
    """in_session for work that only reads: each statement on its own (autocommit), so no BEGIN and ROLLBACK round
    trips around it (two of a one-query request's four). Its statements do not share one snapshot: for reads
    whose parts need not agree to the instant (a page and its count, an incident and its links)."""

    def run() -> T:
        with autocommit_session(engine) as session:
            return work(session)

    return await on_pool(engine, run)


def get_incident(*, session: Session, incident_id: int) -> Incident:
    """The incident row, or IncidentNotFound."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise IncidentNotFound(f"incident {incident_id} does not exist")
    return incident


def temporal_ui_link(*, ui_url: str, namespace: str, workflow_id: str) -> str:
    return f"{ui_url}/namespaces/{quote(namespace)}/workflows/{quote(workflow_id)}"


def incident_detail(*, session: Session, incident: Incident | int, ui_url: str, namespace: str) -> IncidentDetail:
    """The incident (an object, or its id: IncidentNotFound if there is none) with its projected workflow status
    and steps."""
    incident_id = incident if isinstance(incident, int) else incident.id
    # The incident and its run in one statement, so one snapshot: the projection moves both in one statement, and an
    # alert's source resolves the incident only after its run's row says completed. Read one after the other, a
    # commit in between could show a resolved incident beside a run still in progress (or the reverse).
    found = session.exec(
        select(Incident, WorkflowRun)
        .outerjoin(WorkflowRun, col(WorkflowRun.workflow_id) == col(Incident.workflow_id))
        .where(Incident.id == incident_id)
        .execution_options(populate_existing=True)  # an incident object the caller holds, as it is now
    ).first()
    if found is None:
        raise IncidentNotFound(f"incident {incident_id} does not exist")
    incident, run = found
    workflow = None
    if incident.workflow_id:
        steps = session.exec(
            select(WorkflowStep)
            .where(WorkflowStep.workflow_id == incident.workflow_id)
            .order_by(col(WorkflowStep.position))
        ).all()
        workflow = WorkflowPublic(
            workflow_id=incident.workflow_id,
            status=run.status if run else "pending",
            # Agents record their own steps, so the step rows are the fresher source of what runs now.
            current_steps=[step.step_id for step in steps if step.status == "running"],
            error=run.error if run else None,
            started_at=run.started_at if run else None,
            finished_at=run.finished_at if run else None,
            temporal_ui_url=temporal_ui_link(ui_url=ui_url, namespace=namespace, workflow_id=incident.workflow_id),
            steps=[StepPublic.model_validate(step, from_attributes=True) for step in steps],
        )
    assert incident.id is not None
    links = [
        LinkPublic(
            id=link.id or 0,
            kind=kind,
            incident_id=other.id or 0,
            title=other.title,
            status=other.status,
            severity=other.severity,
        )
        for link, kind, other in links_of(session=session, incident_id=incident.id)
    ]
    return IncidentDetail(
        **IncidentPublic.model_validate(incident, from_attributes=True).model_dump(), workflow=workflow, links=links
    )


def detail_for(*, session: Session, incident: Incident | int, settings: Settings) -> IncidentDetail:
    """incident_detail with the Temporal UI link built from settings."""
    return incident_detail(
        session=session,
        incident=incident,
        ui_url=settings.effective_temporal_ui_url,
        namespace=settings.temporal_namespace,
    )


class AssigneeNotFound(Invalid):
    pass


def assign(*, session: Session, incident: Incident, user_id: int | None, team_id: int | None, actor: Actor) -> None:
    """Assign the incident to a user and/or a team (None unassigns); on the timeline and in the audit log."""
    user = session.get(User, user_id) if user_id is not None else None
    if user_id is not None and (user is None or not user.is_active):
        raise AssigneeNotFound(f"user_id: user {user_id} does not exist")
    team = session.get(Team, team_id) if team_id is not None else None
    if team_id is not None and team is None:
        raise AssigneeNotFound(f"team_id: team {team_id} does not exist")
    assert incident.id is not None
    before = {"assignee_user_id": incident.assignee_user_id, "assignee_team_id": incident.assignee_team_id}
    incident.assignee_user_id, incident.assignee_team_id = user_id, team_id
    incident.updated_at = utcnow()
    session.add(incident)
    incident_event(
        session,
        kind="incident.assigned",
        incident_id=incident.id,
        actor=actor.name,
        user=user.username if user else None,
        team=team.name if team else None,
    )
    record_audit(
        session,
        actor=actor,
        action="incident.assign",
        target_type="incident",
        target_id=incident.id,
        before=before,
        after={"assignee_user_id": user_id, "assignee_team_id": team_id},
    )
    session.commit()
    session.refresh(incident)
