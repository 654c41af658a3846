"""Human approval of risky steps: the approval requests, their append-only audit log, and the policies that
pre-approve some of them or name who may approve.

The workflow is the source of truth for a decision (a `decide_approval` Update, validated in the workflow);
these tables are its record, written by activities, for the API, the pages and the audit. The rules here are
pure (no I/O, no clock) so the workflow's validator and the API use the same ones.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Index, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from core.agents import RISK_RANK, RISKS
from core.tables import utcnow

APPROVAL_STATUSES = ("pending", "approved", "rejected", "expired")


class Approval(SQLModel, table=True):
    """One request for a human decision before a step runs (one per step run)."""

    __tablename__ = "approvals"
    __table_args__ = (
        UniqueConstraint("workflow_id", "step_id", "run", name="uq_approvals_workflow_step_run"),
        Index("ix_approvals_status_expires_at", "status", "expires_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    workflow_id: str = Field(max_length=200, index=True)
    incident_id: int = Field(sa_column=Column(BigInteger, ForeignKey("incidents.id"), nullable=False, index=True))
    step_id: str = Field(max_length=63)
    run: int = 1
    agent: str = Field(max_length=100)
    action: str = Field(sa_column=Column(Text, nullable=False))
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    context_summary: str = Field(default="", sa_column=Column(Text, nullable=False))
    risk: str = Field(max_length=20)
    impact: str = Field(default="", sa_column=Column(Text, nullable=False))
    approvers: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    status: str = Field(default="pending", max_length=20)
    requested_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    decided_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    decided_by: str | None = Field(default=None, max_length=200)
    channel: str | None = Field(default=None, max_length=20)
    comment: str | None = Field(default=None, sa_column=Column(Text))
    modified_params: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    policy_id: int | None = Field(default=None, sa_column=Column(BigInteger))  # the policy that auto-approved
    # Who added or changed the step at run time: no policy pre-approves it, and this person may not decide it.
    changed_by: str | None = Field(default=None, max_length=100)


class ApprovalEvent(SQLModel, table=True):
    """Append-only audit of an approval: requested, notified (per channel), viewed, decided, expired,
    auto_approved. A trigger refuses UPDATE and DELETE (migration 0006)."""

    __tablename__ = "approval_events"
    __table_args__ = (Index("ix_approval_events_approval_id_id", "approval_id", "id"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    approval_id: int = Field(sa_column=Column(BigInteger, ForeignKey("approvals.id"), nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    kind: str = Field(max_length=30)
    actor: str = Field(default="system", max_length=200)
    channel: str | None = Field(default=None, max_length=20)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))


class ApprovalLink(SQLModel, table=True):
    """A single-use decision link sent by email: the random token itself is never stored, only its hash."""

    __tablename__ = "approval_links"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    approval_id: int = Field(sa_column=Column(BigInteger, ForeignKey("approvals.id"), nullable=False, index=True))
    token_hash: str = Field(max_length=64, unique=True)
    decision: str = Field(max_length=10)  # approve | reject
    user_id: int = Field(foreign_key="users.id")
    recipient: str = Field(max_length=320)
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


def link_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApprovalPolicy(SQLModel, table=True):
    """A trust rule. It matches steps by agent, incident type and service (empty: any) up to `max_risk`, and
    either pre-approves them (`auto_approve`) or names who may approve them. The first match (lowest
    priority number) wins."""

    __tablename__ = "approval_policies"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    name: str = Field(max_length=200, unique=True)
    enabled: bool = True
    priority: int = 100
    agent: str | None = Field(default=None, max_length=100)
    incident_type: str | None = Field(default=None, max_length=100)
    service: str | None = Field(default=None, max_length=200)
    max_risk: str = Field(default="low", max_length=20)
    auto_approve: bool = False
    approver_users: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    approver_teams: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    approver_role: str = Field(default="approver", max_length=20)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


def policy_matches(policy: ApprovalPolicy, *, agent: str, incident_type: str, service: str, risk: str) -> bool:
    return (
        policy.enabled
        and policy.agent in (None, "", agent)
        and policy.incident_type in (None, "", incident_type)
        and policy.service in (None, "", service)
        and RISK_RANK.get(risk, len(RISKS)) <= RISK_RANK.get(policy.max_risk, -1)
    )


def first_match(
    policies: list[ApprovalPolicy], *, agent: str, incident_type: str, service: str, risk: str
) -> ApprovalPolicy | None:
    for policy in sorted(policies, key=lambda p: (p.priority, p.id or 0)):
        if policy_matches(policy, agent=agent, incident_type=incident_type, service=service, risk=risk):
            return policy
    return None


def approvers_of(policy: ApprovalPolicy | None) -> dict[str, Any]:
    """Who may decide: named users, members of named teams, or anyone with at least the role; admins always."""
    if policy is None:
        return {"users": [], "teams": [], "role": "approver"}
    return {"users": list(policy.approver_users), "teams": list(policy.approver_teams), "role": policy.approver_role}
