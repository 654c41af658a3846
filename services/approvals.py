"""Deciding approvals, for every channel (API, page, Slack, email): checks what the
database can tell at once (exists, still pending, who may decide), then sends the workflow's
`decide_approval` Update, whose validator is the final word (two approvers at once: one wins)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from core.approval_rules import decision_input_problem, may_decide
from core.approvals import Approval, ApprovalEvent
from core.audit import Actor
from core.db import autocommit_session
from core.errors import DomainError, NotFound
from core.identity import Team, TeamMember
from core.payloads import DecideApprovalInput, WorkflowState
from core.tables import Incident, utcnow


class ApprovalNotFound(NotFound):
    pass


class DecisionRefused(DomainError):
    """A decision that cannot be taken; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status=status)


def get_approval(session: Session, approval_id: int) -> Approval:
    approval = session.get(Approval, approval_id)
    if approval is None:
        raise ApprovalNotFound(f"approval {approval_id} does not exist")
    return approval


def describe(approval: Approval, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    data = approval.model_dump(mode="json")
    data["seconds_left"] = (
        max(0, int((approval.expires_at - now).total_seconds())) if approval.status == "pending" else 0
    )
    return data


def audit_log(session: Session, approval_id: int) -> list[dict[str, Any]]:
    rows = session.exec(
        select(ApprovalEvent).where(ApprovalEvent.approval_id == approval_id).order_by(col(ApprovalEvent.id))
    )
    return [row.model_dump(mode="json", exclude={"approval_id"}) for row in rows]


def record_viewed(session: Session, approval: Approval, actor: str, channel: str) -> None:
    """The first time each person opens a pending approval is kept in its audit log."""
    if approval.status != "pending" or approval.id is None:
        return
    seen = session.exec(
        select(ApprovalEvent.id).where(
            ApprovalEvent.approval_id == approval.id, ApprovalEvent.kind == "viewed", ApprovalEvent.actor == actor
        )
    ).first()
    if seen is None:
        session.add(ApprovalEvent(approval_id=approval.id, kind="viewed", actor=actor, channel=channel))
        session.commit()


_APPROVAL_AND_TEAMS = select(
    Approval,
    select(func.array_agg(Team.name))
    .join(TeamMember, col(TeamMember.team_id) == col(Team.id))
    .where(TeamMember.user_id == bindparam("user_id"))
    .scalar_subquery(),
).where(Approval.id == bindparam("approval_id"))


def _approval_and_teams(session: Session, approval_id: int, user_id: int | None) -> tuple[Approval, list[str]]:
    """The approval and the deciding user's teams: one query, built once, in a round trip of its own (a
    decision waits on it; the caller's session holds no transaction over the Update that follows)."""
    with autocommit_session(session) as db:
        row = db.exec(_APPROVAL_AND_TEAMS, params={"approval_id": approval_id, "user_id": user_id}).first()
    if row is None:
        raise ApprovalNotFound(f"approval {approval_id} does not exist")
    approval, names = row
    return approval, list(names or [])  # array_agg of no rows is NULL


async def decide(
    session: Session,
    temporal: Client,
    approval_id: int,
    *,
    decision: str,
    actor: Actor,
    role: str,
    channel: str,
    params: dict[str, Any] | None = None,
    comment: str = "",
) -> dict[str, Any]:
    """Decide; returns the approval as the workflow now holds it. Raises ApprovalNotFound, DecisionRefused.

    The decision's audit row (the actor: who, and how and from where) is written by the workflow's activity
    that records the decision, in the same transaction: once, whatever the channel, off the decision's path."""
    approval, teams = _approval_and_teams(session, approval_id, actor.user_id)
    if approval.status != "pending":
        by = f" by {approval.decided_by}" if approval.decided_by else ""
        raise DecisionRefused(409, f"approval {approval_id} is already {approval.status}{by}")
    if not may_decide(approval.approvers, actor=actor.name, role=role, teams=teams):
        raise DecisionRefused(403, f"{actor.name} may not decide approval {approval_id}")
    if approval.changed_by == actor.name and role != "admin":
        raise DecisionRefused(
            403,
            f"{actor.name} may not decide this approval: they added or changed step {approval.step_id} at run time, "
            "so someone else must",
        )
    arg = DecideApprovalInput(
        decision=decision,
        approval_id=approval_id,
        params=params,
        comment=comment,
        actor=actor.name,
        actor_role=role,
        actor_teams=teams,
        channel=channel,
        origin=actor.origin(),
    )
    problem = decision_input_problem(arg)
    if problem:
        raise DecisionRefused(422, problem)
    try:
        state = await temporal.get_workflow_handle(approval.workflow_id).execute_update(
            "decide_approval", arg, result_type=WorkflowState
        )
    except WorkflowUpdateFailedError as err:
        reason = str(getattr(err.cause, "message", None) or err.cause)
        code = 422 if reason.startswith(("param", "unknown param", "params")) else 409
        if reason.startswith(f"{actor.name} may not decide"):  # the approvers changed since the row was read
            code = 403
        raise DecisionRefused(code, f"decision refused: {reason}") from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        message = f"Temporal did not answer in time: look at approval {approval_id} again before deciding again"
        raise DecisionRefused(503, message) from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise DecisionRefused(409, f"the workflow of approval {approval_id} is no longer running") from None
        raise DecisionRefused(503, f"Temporal: {err.message}") from None
    for step in state.steps:
        if step.approval is not None and step.approval.approval_id == approval_id:
            return {**describe(approval), **_live(step.approval)}
    return describe(approval)


def _live(approval: Any) -> dict[str, Any]:
    return {
        "status": approval.status,
        "decided_by": approval.decided_by,
        "decided_at": approval.decided_at,
        "channel": approval.channel,
        "comment": approval.comment,
        "modified_params": approval.modified_params,
        "seconds_left": 0,
    }


QUEUE_SHOWN = 200


def approval_queue(
    *, session: Session, status_filter: str = "pending", incident_id: int | None = None
) -> list[dict[str, Any]]:
    """Approvals with their incident's title, pending ones soonest to expire first, others newest first."""
    query = select(Approval, Incident.title).join(Incident, col(Incident.id) == Approval.incident_id)
    if status_filter != "all":
        query = query.where(Approval.status == status_filter)
    if incident_id is not None:
        query = query.where(Approval.incident_id == incident_id)
    order = col(Approval.expires_at) if status_filter == "pending" else col(Approval.id).desc()
    now = utcnow()
    return [
        {**describe(a, now), "incident_title": title}
        for a, title in session.exec(query.order_by(order).limit(QUEUE_SHOWN))
    ]
