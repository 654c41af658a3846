"""Human approval of risky steps: the approval requests, their append-only audit log, and the policies that
pre-approve some of them or name who may approve.

The workflow is the source of truth for a decision (a `decide_approval` Update, validated in the workflow);
these tables are its record, written by activities, for the API, the pages and the audit. The rules here are
pure (no I/O, no clock) so the workflow's validator and the API use the same ones.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Index, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from core.agents import RISK_RANK, RISKS
from core.identity import ROLE_RANK
from core.payloads import DecideApprovalInput
from core.redact import MASK, redact
from core.tables import utcnow

APPROVAL_STATUSES = ("pending", "approved", "rejected", "expired")
# Risk at or above which a step needs approval even if its playbook does not say so.
APPROVAL_RISK = "high"


def needs_approval(requires_approval: bool, risk: str) -> bool:
    return requires_approval or RISK_RANK.get(risk, 0) >= RISK_RANK[APPROVAL_RISK]


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


def may_decide(approvers: dict[str, Any], *, actor: str, role: str, teams: list[str]) -> bool:
    if role == "admin":
        return True
    users, named_teams = approvers.get("users") or [], approvers.get("teams") or []
    if actor in users or set(teams) & set(named_teams):
        return True
    if users or named_teams:
        return False  # the policy names who; a role alone is not enough
    return ROLE_RANK.get(role, -1) >= ROLE_RANK.get(approvers.get("role") or "approver", ROLE_RANK["approver"])


def modification_problem(original: dict[str, Any], modified: dict[str, Any]) -> str | None:
    """Edited params must keep the step's shape: the same keys, each with a value of the same JSON type (an
    agent's own JSON schema, when agents declare one, is checked too). None when fine."""
    if not isinstance(modified, dict):
        return "params must be an object"
    unknown = sorted(set(modified) - set(original))
    if unknown:
        return f"unknown param {unknown[0]!r}; the step takes {sorted(original) or 'no params'}"
    missing = sorted(set(original) - set(modified))
    if missing:
        return f"param {missing[0]!r} is missing"
    for key, value in modified.items():
        before = original[key]
        same = (isinstance(before, bool) and isinstance(value, bool)) or (
            not isinstance(before, bool)
            and not isinstance(value, bool)
            and (
                type(before) is type(value)
                or (isinstance(before, int | float) and isinstance(value, int | float))
                or before is None
            )
        )
        if not same:
            return f"param {key!r} must stay a {_json_type(before)}, not a {_json_type(value)}"
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


# What a decision may carry: the columns its record is written to (approvals.decided_by 200, channel 20;
# audit_events.actor 100, actor_kind 20, ip 64, user_agent 300). Postgres text and jsonb cannot hold NUL.
DECISION_LIMITS = {"actor": 100, "channel": 20, "comment": 2000}
ORIGIN_LIMITS = {"kind": 20, "ip": 64, "user_agent": 300}


def decision_input_problem(decision: DecideApprovalInput) -> str | None:
    """What is wrong with a decision's own fields (before what it decides is judged), or None: a decision
    its record could not hold would be taken by the workflow, then fail to be written for ever."""
    problem = decision_nul_problem(decision)
    if problem:
        return problem
    for name, limit in DECISION_LIMITS.items():
        if len(getattr(decision, name)) > limit:
            return f"{name} is longer than {limit} characters"
    if not decision.actor.strip():
        return "actor must not be empty"
    origin = decision.origin
    if origin is not None:
        for name, limit in ORIGIN_LIMITS.items():
            value = getattr(origin, name)
            if value is not None and (not isinstance(value, str) or len(value) > limit or "\x00" in value):
                return f"origin.{name} must be a string of at most {limit} characters, without NUL"
    return None


def decision_nul_problem(decision: DecideApprovalInput) -> str | None:
    """Text no record can hold: the workflow's state is written to Postgres too, so the workflow ignores such a
    signal (an Update's validator refuses it with everything decision_input_problem checks)."""
    for name in DECISION_LIMITS:
        value = getattr(decision, name)
        if not isinstance(value, str):
            return f"{name} must be a string"
        if "\x00" in value:
            return f"{name} contains a NUL character"
    if decision.params is not None and "\\u0000" in json.dumps(decision.params):
        return "params contain a NUL character"
    return None


def unmask_params(original: dict[str, Any], modified: dict[str, Any]) -> dict[str, Any]:
    """Edited params as the step runs them. An approver edits what the page shows, where secrets are redacted:
    a value sent back exactly as shown gets the step's real value again."""
    shown = redact(original)  # as the request's row holds them (masked by key name, and by shape)
    return {
        key: original[key] if key in original and value != original[key] and value == shown[key] else value
        for key, value in modified.items()
    }


def masked_problem(original: dict[str, Any], modified: dict[str, Any]) -> str | None:
    """A redacted value that was edited (not sent back as shown): the real secret cannot be recovered from it."""
    for key, value in unmask_params(original, modified).items():
        if MASK in json.dumps(value) and MASK not in json.dumps(original.get(key)):
            return f"param {key!r} still holds {MASK}: send its real value, or leave it exactly as shown"
    return None
