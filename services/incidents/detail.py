"""Reading an incident: its row and its projected workflow state (the detail the API and the page show);
assigning it. Opening one is services/incidents/open.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

from sqlalchemy import Engine, bindparam, case, or_
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from core.audit import Actor, record_audit
from core.collaboration import LINK_INVERSE, IncidentLink
from core.db import autocommit_session, on_pool, session_scope
from core.errors import Invalid, NotFound
from core.events import incident_event
from core.identity import Team, User
from core.settings import Settings
from core.tables import Incident, WorkflowRun, WorkflowStep, utcnow
from services.incidents.query import PUBLIC_FIELDS
from services.schemas import IncidentDetail, LinkPublic, StepPublic, WorkflowPublic


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


# The detail's reads, built once (building and keying a statement costs about 40 µs each time). Rows of the columns
# shown, not ORM objects: nothing here is changed. ORM attributes, so a caller's pending changes are flushed first.
_INCIDENT_AND_RUN = (
    select(  # type: ignore[call-overload]  # sqlmodel's overloads take no unpacked columns
        *(getattr(Incident, name) for name in PUBLIC_FIELDS),
        col(WorkflowRun.workflow_id).label("run_workflow_id"),
        col(WorkflowRun.status).label("run_status"),
        col(WorkflowRun.error).label("run_error"),
        col(WorkflowRun.started_at).label("run_started_at"),
        col(WorkflowRun.finished_at).label("run_finished_at"),
    )
    .outerjoin(WorkflowRun, col(WorkflowRun.workflow_id) == col(Incident.workflow_id))
    .where(col(Incident.id) == bindparam("incident_id"))
)
_STEP_FIELDS = tuple(StepPublic.model_fields)
_STEPS = (
    select(*(getattr(WorkflowStep, name) for name in _STEP_FIELDS))
    .where(col(WorkflowStep.workflow_id) == bindparam("workflow_id"))
    .order_by(col(WorkflowStep.position))
)
# Every link touching the incident, with the incident at its other end and which way the link reads, in one
# statement: no ORM objects and no read per link.
_OTHER = aliased(Incident)
_OUTGOING = col(IncidentLink.incident_id) == bindparam("incident_id")
_LINKS = (
    select(  # type: ignore[call-overload]  # sqlmodel's overloads stop at 4 columns
        col(IncidentLink.id),
        col(IncidentLink.kind),
        _OUTGOING.label("outgoing"),
        col(_OTHER.id),
        col(_OTHER.title),
        col(_OTHER.status),
        col(_OTHER.severity),
    )
    .join(
        _OTHER,
        col(_OTHER.id) == case((_OUTGOING, col(IncidentLink.related_incident_id)), else_=col(IncidentLink.incident_id)),
    )
    .where(or_(_OUTGOING, col(IncidentLink.related_incident_id) == bindparam("incident_id")))
    .order_by(col(IncidentLink.id))
)


def incident_detail(*, session: Session, incident: Incident | int, ui_url: str, namespace: str) -> IncidentDetail:
    """The incident (an object, or its id: IncidentNotFound if there is none) with its projected workflow status
    and steps, as stored now."""
    incident_id = incident if isinstance(incident, int) else incident.id
    # The incident and its run in one statement, so one snapshot: the projection moves both in one statement, and an
    # alert's source resolves the incident only after its run's row says completed. Read one after the other, a
    # commit in between could show a resolved incident beside a run still in progress (or the reverse).
    found = session.execute(_INCIDENT_AND_RUN, {"incident_id": incident_id}).first()
    if found is None:
        raise IncidentNotFound(f"incident {incident_id} does not exist")
    public = dict(zip(PUBLIC_FIELDS, found, strict=False))  # the run's columns follow (Row._mapping is slow)
    run_workflow_id, run_status, run_error, run_started_at, run_finished_at = found[len(PUBLIC_FIELDS) :]
    workflow_id = public["workflow_id"]
    workflow = None
    if workflow_id:
        steps = [
            StepPublic.model_validate(dict(zip(_STEP_FIELDS, step, strict=True)))
            for step in session.execute(_STEPS, {"workflow_id": workflow_id})
        ]
        ran = run_workflow_id is not None
        workflow = WorkflowPublic(
            workflow_id=workflow_id,
            status=run_status if ran else "pending",
            # Agents record their own steps, so the step rows are the fresher source of what runs now.
            current_steps=[step.step_id for step in steps if step.status == "running"],
            error=run_error,
            started_at=run_started_at,
            finished_at=run_finished_at,
            temporal_ui_url=temporal_ui_link(ui_url=ui_url, namespace=namespace, workflow_id=workflow_id),
            steps=steps,
        )
    links = [
        LinkPublic(
            id=link_id,
            kind=kind if outgoing else LINK_INVERSE[kind],
            incident_id=other_id,
            title=title,
            status=status,
            severity=severity,
        )
        for link_id, kind, outgoing, other_id, title, status, severity in session.execute(
            _LINKS, {"incident_id": public["id"]}
        )
    ]
    return IncidentDetail(**public, workflow=workflow, links=links)


def new_incident_detail(*, incident: Incident, settings: Settings) -> IncidentDetail:
    """The detail of an incident this request just stored and started, from what it wrote: its run is pending (the
    worker records it from here on), no step has run, nothing links to it yet. What a read right after the start
    would have found, without waiting a second time for a pooled connection and reading it back."""
    assert incident.workflow_id is not None
    workflow = WorkflowPublic(
        workflow_id=incident.workflow_id,
        status="pending",
        current_steps=[],
        error=None,
        started_at=None,
        finished_at=None,
        temporal_ui_url=temporal_ui_link(
            ui_url=settings.effective_temporal_ui_url,
            namespace=settings.temporal_namespace,
            workflow_id=incident.workflow_id,
        ),
        steps=[],
    )
    public = {name: getattr(incident, name) for name in PUBLIC_FIELDS}
    return IncidentDetail(**public, workflow=workflow, links=[])


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
