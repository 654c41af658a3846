"""The rules of approvals, pure (no I/O, no clock, no database types): when a step needs a person, who may
decide, and which decisions and edited params are acceptable. The workflow's validators and the API judge with the
same functions; core/approvals.py holds the tables that record what was decided.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.agents import RISK_RANK
from core.payloads import DecideApprovalInput
from core.redact import MASK, redact
from core.roles import ROLE_RANK

# Risk at or above which a step needs approval even if its playbook does not say so.
APPROVAL_RISK = "high"


def needs_approval(requires_approval: bool, risk: str) -> bool:
    return requires_approval or RISK_RANK.get(risk, 0) >= RISK_RANK[APPROVAL_RISK]


def may_decide(approvers: dict[str, Any], *, actor: str, role: str, teams: list[str]) -> bool:
    if role == "admin":
        return True
    users, named_teams = approvers.get("users") or [], approvers.get("teams") or []
    if actor in users or set(teams) & set(named_teams):
        return True
    if users or named_teams:
        return False  # the policy names who; a role alone is not enough
    return ROLE_RANK.get(role, -1) >= ROLE_RANK.get(approvers.get("role") or "approver", ROLE_RANK["approver"])


class ApproverSpec(BaseModel):
    """Who may approve a playbook's steps (Playbook.approvers) or one step's (StepSpec.approvers): named users and
    members of named teams; admins always may. Empty: no restriction (the approval policy's approvers)."""

    model_config = ConfigDict(extra="forbid")

    users: list[str] = Field(default_factory=list, max_length=50)
    teams: list[str] = Field(default_factory=list, max_length=50)


def approvers_for(
    policy: Mapping[str, Any], step: Mapping[str, Any] | None, playbook: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Who may decide a step's approval: the step's own named approvers, else its playbook's, else the matching
    policy's (core.approvals.approvers_of). Named ones replace the policy's users and teams (a policy still
    auto-approves what it trusts); the policy's role only counts when nobody is named."""
    for restriction in (step, playbook):
        users, teams = (restriction or {}).get("users") or [], (restriction or {}).get("teams") or []
        if users or teams:
            return {"users": list(users), "teams": list(teams), "role": policy.get("role") or "approver"}
    return dict(policy)


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
