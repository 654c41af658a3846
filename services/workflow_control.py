"""Run-time control of an incident's workflow: retry a failed step, abort, add, remove and edit pending steps.

The one home of these rules, for the API (api/routes/workflows.py) and the incident page
(web/pages/workflow_control.py) alike. Each change is a Temporal Update on IncidentWorkflow. What can be checked
here is checked before the Update is sent (Invalid, 422: a NUL anywhere, a step that is not a valid step, params
that do not fit the agent's schema, a risk below the agent's, a redacted value that was edited); the workflow's
validator refuses what depends on its state (ChangeRefused, 409) before anything reaches the history. The change's
audit row is written with the change's record by the workflow's projection write (runs started before that: here,
after the Update).

Params are shown to people redacted (core/redact.py), as the approval form shows them: a value sent back exactly as
shown gets the step's real value again, and an edited redacted value is refused (its secret cannot be recovered).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from core.agents import AgentSpec
from core.approval_rules import masked_problem, unmask_params
from core.approvals import Approval, ApprovalPolicy
from core.audit import Actor, record_audit
from core.errors import Conflict, Invalid, NotFound, Unavailable
from core.payloads import (
    AbortInput,
    AddStepInput,
    ApprovalState,
    RemoveStepInput,
    RetryStepInput,
    StepState,
    UpdateStepParamsInput,
    WorkflowState,
)
from core.playbook import StepSpec, risk_floor_problem
from core.redact import redact
from core.tables import Incident, WorkflowRun, WorkflowStep
from services.agents import all_agent_specs
from workflows.changes import nul_problem

QUERY_TIMEOUT = 5.0  # seconds a `status` query may take before the projection answers instead


class WorkflowUnknown(NotFound):
    pass


class ChangeInvalid(Invalid):
    """The change itself is wrong ("field: why"), whatever the workflow's state."""


class ChangeRefused(Conflict):
    """The workflow's validator refused the change in its current state, or the run has ended."""


class TemporalUnavailable(Unavailable):
    pass


def workflow_known(session: Session, workflow_id: str) -> bool:
    """A workflow with a projection row, or one an incident has started: its first row is written with its
    first agent's step, so a just-started workflow may not have one yet."""
    return session.get(WorkflowRun, workflow_id) is not None or started_by_incident(session, workflow_id)


def started_by_incident(session: Session, workflow_id: str) -> bool:
    return session.exec(select(Incident.id).where(Incident.workflow_id == workflow_id).limit(1)).first() is not None


# The statuses a workflow ends with (workflows/incident/workflow.py `_finish`). With `finished_at` set, the
# projection holds its final state: `_finish` writes it, and waits for the write, after the last step changed.
# A failed run still waiting for a retry has no finished_at.
FINAL_STATUSES = ("completed", "failed", "cancelled")


# A step's approval as the workflow holds it (core.payloads.ApprovalState), from the `approvals` row of the step's
# latest run: the fields, in the order of the dataclass, and the policy's name.
_APPROVAL_COLUMNS = (
    Approval.id, Approval.status, Approval.risk, Approval.expires_at, Approval.approvers, Approval.decided_by,
    Approval.decided_at, Approval.channel, Approval.comment, Approval.modified_params, ApprovalPolicy.name,
    Approval.changed_by,
)  # fmt: skip
_APPROVAL_FIELDS = [f.name for f in dataclasses.fields(ApprovalState)]
ProjectedStep = tuple[WorkflowStep, dict[str, Any] | None]


def projection(session: Session, workflow_id: str) -> tuple[WorkflowRun | None, list[ProjectedStep]]:
    """The run's projected row and its steps in position order, each with its latest run's approval, in one round
    trip."""
    rows = session.exec(
        select(WorkflowRun, WorkflowStep, *_APPROVAL_COLUMNS)  # type: ignore[call-overload]
        .outerjoin(WorkflowStep, col(WorkflowStep.workflow_id) == col(WorkflowRun.workflow_id))
        .outerjoin(
            Approval,
            (col(Approval.workflow_id) == col(WorkflowStep.workflow_id))
            & (col(Approval.step_id) == col(WorkflowStep.step_id))
            & (col(Approval.run) == col(WorkflowStep.runs)),
        )
        .outerjoin(ApprovalPolicy, col(ApprovalPolicy.id) == col(Approval.policy_id))
        .where(WorkflowRun.workflow_id == workflow_id)
        .order_by(col(WorkflowStep.position))
    ).all()
    steps = [(row[1], _approval(row[2:])) for row in rows if row[1] is not None]
    return (rows[0][0] if rows else None), steps


def _approval(values: Sequence[Any]) -> dict[str, Any] | None:
    if values[0] is None:
        return None
    approval = dict(zip(_APPROVAL_FIELDS, values, strict=True))
    approval["expires_at"] = _iso(approval["expires_at"])
    approval["decided_at"] = _iso(approval["decided_at"])
    if approval["modified_params"] is not None:
        approval["modified_params"] = redact(approval["modified_params"])
    return approval


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def finished(run: WorkflowRun | None) -> bool:
    return run is not None and run.finished_at is not None and run.status in FINAL_STATUSES


def projected_state(run: WorkflowRun, steps: list[ProjectedStep]) -> dict[str, Any]:
    """The state as the `status` query answers it (a WorkflowState as JSON) from the projection, with secrets in
    params redacted. Steps written before migration 0022 take their params from their agent's input."""
    return {
        "workflow_id": run.workflow_id,
        "incident_id": run.incident_id,
        "playbook_id": run.playbook_id,
        "status": run.status,
        "current_steps": [s.step_id for s, _ in steps if s.status == "running"] if run.finished_at is None else [],
        "steps": [
            {
                "step_id": s.step_id,
                "agent": s.agent,
                "position": s.position,
                "status": s.status,
                "attempt": s.attempt,
                "started_at": _iso(s.started_at),
                "finished_at": _iso(s.finished_at),
                "output": s.output,
                "error": s.error,
                "runs": s.runs,
                "note": s.note,
                "params": s.params if s.params is not None else (s.input or {}).get("params") or {},
                "approval": approval,
            }
            for s, approval in steps
        ],
        "error": run.error,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "playbook_version": run.playbook_version,
        "changes": run.changes,
    }


async def live_state(temporal: Client, workflow_id: str) -> WorkflowState:
    """The workflow's `status` query (TimeoutError when no worker answers in time, RPCError from Temporal)."""
    return await asyncio.wait_for(
        temporal.get_workflow_handle(workflow_id).query("status", result_type=WorkflowState), QUERY_TIMEOUT
    )


async def live_step(temporal: Client, session: Session, workflow_id: str, step_id: str) -> tuple[str | None, Any]:
    """A step's agent and real params from the run's live state; else its agent from the projection and no params
    (None, None: no such step)."""
    try:
        state = await live_state(temporal, workflow_id)
        found = next((s for s in state.steps if s.step_id == step_id), None)
        return (found.agent, found.params) if found else (None, None)
    except (TimeoutError, RPCError):
        row = session.exec(
            select(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id, WorkflowStep.step_id == step_id)
        ).first()
        return (row.agent if row else None), None


def shown_params(params: dict[str, Any]) -> dict[str, Any]:
    """A step's params as people see them: secrets redacted (by key name and by shape)."""
    shown: dict[str, Any] = redact(params)
    return shown


def edited_params(original: dict[str, Any], submitted: dict[str, Any]) -> dict[str, Any] | None:
    """What a form that shows every param sent back, as the step would run it (values sent back as shown get
    their real value again); None when nothing changed, so an untouched retry is not a changed step."""
    real = unmask_params(original, submitted)
    return None if real == original else submitted


def _valid(problem: str | None) -> None:
    if problem:
        raise ChangeInvalid(problem)


def agent_params_problem(agent: AgentSpec, step_id: str, params: dict[str, Any]) -> str | None:
    problem = agent.params_problem(params)
    return f"step {step_id}: {problem}" if problem else None


async def _checked_params(
    temporal: Client, session: Session, workflow_id: str, step_id: str | None, params: dict[str, Any] | None
) -> dict[str, Any] | None:
    """New params for a step of the run as it will run them (redacted values sent back as shown are its real ones),
    checked against its agent's schema; Invalid when they do not fit or hold an edited redacted value."""
    if params is None or step_id is None:
        return params
    agent_name, original = await live_step(temporal, session, workflow_id, step_id)
    original = original if isinstance(original, dict) else {}
    _valid(f"step {step_id}: {p}" if (p := masked_problem(original, params)) else None)
    real = unmask_params(original, params)
    agent = all_agent_specs(session).get(str(agent_name))
    _valid(agent_params_problem(agent, step_id, real) if agent is not None else None)
    return real


async def _update(
    *, session: Session, temporal: Client, workflow_id: str, name: str, arg: Any, action: str, actor: Actor
) -> WorkflowState:
    if not workflow_known(session, workflow_id):
        raise WorkflowUnknown(f"workflow {workflow_id} does not exist")
    _valid(nul_problem(dataclasses.asdict(arg)))
    arg.actor = actor.name
    arg.origin = actor.origin()
    handle = temporal.get_workflow_handle(workflow_id)
    try:
        state: WorkflowState = await handle.execute_update(name, arg, result_type=WorkflowState)
    except WorkflowUpdateFailedError as err:
        reason = str(err.cause.message if hasattr(err.cause, "message") else err.cause)
        raise ChangeRefused(f"{name} refused: {reason}") from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ChangeRefused(f"workflow {workflow_id} is no longer running") from None
        raise TemporalUnavailable(f"Temporal: {err.message}") from None
    if not state.audits_changes:  # a run started before its projection wrote the change's audit row
        detail = dataclasses.asdict(arg)
        for private in ("actor", "origin"):
            detail.pop(private, None)
        record_audit(
            session, actor=actor, action=action, target_type="workflow", target_id=workflow_id, after=redact(detail)
        )
        session.commit()
    return state


async def retry_step(
    *,
    session: Session,
    temporal: Client,
    workflow_id: str,
    step_id: str | None,
    params: dict[str, Any] | None,
    actor: Actor,
) -> WorkflowState:
    """Run a failed step again (None: every failed step), optionally with new params checked against its agent's
    schema; completed steps do not run again. A step retried with new params is a changed step: a person other
    than its changer approves it if it is risky, never a policy."""
    params = await _checked_params(temporal, session, workflow_id, step_id, params)
    arg = RetryStepInput(step_id=step_id, params=params, actor=actor.name)
    return await _update(
        session=session, temporal=temporal, workflow_id=workflow_id, name="retry_step", arg=arg,
        action="workflow.retry", actor=actor,
    )  # fmt: skip


async def abort(*, session: Session, temporal: Client, workflow_id: str, reason: str, actor: Actor) -> WorkflowState:
    """Stop the workflow: running steps are cancelled, the rest skipped."""
    arg = AbortInput(reason=reason, actor=actor.name)
    return await _update(
        session=session, temporal=temporal, workflow_id=workflow_id, name="abort", arg=arg,
        action="workflow.abort", actor=actor,
    )  # fmt: skip


def checked_new_step(session: Session, step: dict[str, Any]) -> dict[str, Any]:
    """A step to add as it will be sent: a valid step, its params fitting its agent's schema, at least as risky
    as its agent (without a `risk` of its own it gets the agent's; a lower one is refused)."""
    step = dict(step)
    _valid(nul_problem(step, "step"))
    try:
        spec = StepSpec.model_validate(step)
    except ValidationError as err:
        first = err.errors()[0]
        raise ChangeInvalid(f"step.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    agent = all_agent_specs(session).get(spec.agent)
    if agent is None:
        _valid(f"step {spec.id}: unknown agent {spec.agent!r}")
    else:
        _valid(agent_params_problem(agent, spec.id, spec.params) or risk_floor_problem(spec, agent.default_risk))
        step.setdefault("risk", agent.default_risk)
    return step


async def add_step(
    *, session: Session, temporal: Client, workflow_id: str, step: dict[str, Any], actor: Actor
) -> WorkflowState:
    """Add a step to the running DAG (checked_new_step). A risky step added at run time waits for a person other
    than whoever added it, never a policy."""
    arg = AddStepInput(step=checked_new_step(session, step), actor=actor.name)
    return await _update(
        session=session, temporal=temporal, workflow_id=workflow_id, name="add_step", arg=arg,
        action="workflow.add_step", actor=actor,
    )  # fmt: skip


async def remove_step(
    *, session: Session, temporal: Client, workflow_id: str, step_id: str, actor: Actor
) -> WorkflowState:
    """Remove a step that has not started."""
    arg = RemoveStepInput(step_id=step_id, actor=actor.name)
    return await _update(
        session=session, temporal=temporal, workflow_id=workflow_id, name="remove_step", arg=arg,
        action="workflow.remove_step", actor=actor,
    )  # fmt: skip


async def edit_step_params(
    *, session: Session, temporal: Client, workflow_id: str, step_id: str, params: dict[str, Any], actor: Actor
) -> WorkflowState:
    """Change the params of a step that has not started (checked against its agent's schema). The step is then a
    changed step: a person other than its changer approves it if it is risky, never a policy."""
    real = await _checked_params(temporal, session, workflow_id, step_id, params)
    assert real is not None
    arg = UpdateStepParamsInput(step_id=step_id, params=real, actor=actor.name)
    return await _update(
        session=session, temporal=temporal, workflow_id=workflow_id, name="update_step_params", arg=arg,
        action="workflow.update_step_params", actor=actor,
    )  # fmt: skip


def find_step(state: WorkflowState, step_id: str) -> StepState:
    """A step of the run's live state, or NotFound."""
    found = next((s for s in state.steps if s.step_id == step_id), None)
    if found is None:
        raise NotFound(f"step {step_id} is not a step of {state.workflow_id}")
    return found
