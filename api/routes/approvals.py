"""Approvals API: list and read approval requests, decide them; approval policies (trust rules).

A decision is the workflow's `decide_approval` Update; the CLI equivalent without our API is
`temporal workflow update execute --workflow-id <id> --name decide_approval --input '{"approval_id": 3,
"decision": "approve", "actor": "alice"}'`.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from api.auth import Admin, Principal, Viewer, actor_of, require
from api.deps import INT64_MAX, SessionDep, TemporalDep
from core.approvals import APPROVAL_STATUSES, Approval, ApprovalEvent, ApprovalPolicy
from core.audit import record_audit
from core.tables import utcnow
from services.approvals import audit_log, decide, describe, get_approval

router = APIRouter(prefix="/api/approvals", tags=["approvals"], dependencies=[require("viewer")])
policies = APIRouter(prefix="/api/approval-policies", tags=["approvals"], dependencies=[require("viewer")])
ApprovalId = Annotated[int, Path(ge=1, le=INT64_MAX)]
Risk = Literal["low", "medium", "high", "critical"]
RoleName = Literal["viewer", "responder", "approver", "admin"]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class DecisionBody(BaseModel):
    decision: Literal["approve", "reject"]
    params: dict[str, Any] | None = Field(default=None, description="approve with these edited params")
    comment: str = Field(default="", max_length=2000)


@router.get("")
def list_approvals(
    session: SessionDep,
    status_: Annotated[Literal["pending", "approved", "rejected", "expired"] | None, Query(alias="status")] = None,
    incident_id: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
    before_id: Annotated[int | None, Query(ge=1, le=INT64_MAX, description="the next page: ids below this")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Newest first; `status=pending` is the approver's queue."""
    query = select(Approval)
    if status_ is not None:
        query = query.where(Approval.status == status_)
    if incident_id is not None:
        query = query.where(Approval.incident_id == incident_id)
    if before_id is not None:
        query = query.where(col(Approval.id) < before_id)
    rows = list(session.exec(query.order_by(col(Approval.id).desc()).limit(limit + 1)))
    now = utcnow()
    page = rows[:limit]
    return {
        "items": [describe(row, now) for row in page],
        "next_before_id": page[-1].id if len(rows) > limit else None,
        "statuses": list(APPROVAL_STATUSES),
    }


EXPORT_LIMIT = 100_000


@router.get("/audit.csv", response_class=PlainTextResponse, responses={200: {"content": {"text/csv": {}}}})
def export_audit(
    session: SessionDep,
    since: Annotated[datetime | None, Query(description="events at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="events before (ISO 8601)")] = None,
) -> Response:
    """Every approval's audit log as CSV (oldest first; at most 100,000 rows): who asked, who was told, who
    looked, who decided — for reviews and compliance."""
    query = select(ApprovalEvent, Approval).join(Approval, col(Approval.id) == ApprovalEvent.approval_id)
    if since is not None:
        query = query.where(col(ApprovalEvent.at) >= since)
    if until is not None:
        query = query.where(col(ApprovalEvent.at) < until)
    rows = session.exec(query.order_by(col(ApprovalEvent.id)).limit(EXPORT_LIMIT))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["at", "approval_id", "incident_id", "workflow_id", "step_id", "risk", "kind", "actor",
                     "channel", "data"])  # fmt: skip
    for event, approval in rows:
        writer.writerow([event.at.isoformat(), approval.id, approval.incident_id, approval.workflow_id,
                         approval.step_id, approval.risk, event.kind, event.actor, event.channel or "",
                         json.dumps(event.data, sort_keys=True)])  # fmt: skip
    headers = {"Content-Disposition": 'attachment; filename="approval-audit.csv"'}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/{approval_id}")
def get_one(approval_id: ApprovalId, session: SessionDep) -> dict[str, Any]:
    """The request (action, params, context, risk, impact, approvers, countdown) and its audit log."""
    approval = get_approval(session, approval_id)
    return {**describe(approval), "events": audit_log(session, approval_id)}


@router.post("/{approval_id}/decision")
async def post_decision(
    request: Request,
    approval_id: ApprovalId,
    body: DecisionBody,
    principal: Viewer,
    session: SessionDep,
    temporal: TemporalDep,
) -> dict[str, Any]:
    """Approve, reject (with a reason in `comment`), or approve with edited `params`. 403 if you may not
    decide it, 409 if it is no longer pending (someone else decided first, or it expired), 422 if the edited
    params do not fit the step."""
    decided = await decide(
        session,
        temporal,
        approval_id,
        decision=body.decision,
        params=body.params,
        comment=body.comment,
        actor=actor_of(request, principal),
        role=principal.role,
        channel="ui" if principal.via == "session" else "api",
    )
    return decided


# ---- policies ---------------------------------------------------------------------------------------------


class PolicyBody(BaseModel):
    name: Name
    enabled: bool = True
    priority: int = Field(default=100, ge=0, le=10_000)
    agent: str | None = Field(default=None, max_length=100)
    incident_type: str | None = Field(default=None, max_length=100)
    service: str | None = Field(default=None, max_length=200)
    max_risk: Risk = "low"
    auto_approve: bool = False
    approver_users: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(
        default_factory=list, max_length=100
    )
    approver_teams: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=100
    )
    approver_role: RoleName = "approver"


@policies.get("")
def list_policies(session: SessionDep) -> list[ApprovalPolicy]:
    """In the order they are tried: the first that matches a step decides."""
    return list(session.exec(select(ApprovalPolicy).order_by(col(ApprovalPolicy.priority), col(ApprovalPolicy.id))))


@policies.post("", status_code=status.HTTP_201_CREATED)
def create_policy(request: Request, body: PolicyBody, principal: Admin, session: SessionDep) -> ApprovalPolicy:
    policy = ApprovalPolicy(**body.model_dump(), created_by=principal.username)
    return _save(request, principal, session, policy, "approval_policy.create")


@policies.put("/{policy_id}")
def update_policy(
    request: Request, policy_id: ApprovalId, body: PolicyBody, principal: Admin, session: SessionDep
) -> ApprovalPolicy:
    policy = _policy(session, policy_id)
    for key, value in body.model_dump().items():
        setattr(policy, key, value)
    policy.updated_at = utcnow()
    return _save(request, principal, session, policy, "approval_policy.update")


@policies.delete("/{policy_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_policy(request: Request, policy_id: ApprovalId, principal: Admin, session: SessionDep) -> None:
    policy = _policy(session, policy_id)
    session.delete(policy)
    record_audit(session, actor=actor_of(request, principal), action="approval_policy.delete",
                 target_type="approval_policy", target_id=str(policy_id), before={"name": policy.name})  # fmt: skip
    session.commit()


def _policy(session: SessionDep, policy_id: int) -> ApprovalPolicy:
    policy = session.get(ApprovalPolicy, policy_id)
    if policy is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"approval policy {policy_id} does not exist")
    return policy


def _save(
    request: Request, principal: Principal, session: SessionDep, policy: ApprovalPolicy, action: str
) -> ApprovalPolicy:
    session.add(policy)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, f"an approval policy named {policy.name!r} exists") from None
    record_audit(session, actor=actor_of(request, principal), action=action, target_type="approval_policy",
                 target_id=str(policy.id), after=policy.model_dump(mode="json"))  # fmt: skip
    session.commit()
    session.refresh(policy)
    return policy
