"""Live workflow state and run-time control: retry a failed step, abort, add/remove/edit steps.

Each call is a Temporal Update on IncidentWorkflow. What can be checked here is checked before the Update is
sent (422: a NUL anywhere, a step that is not a valid step, params that do not fit the agent's schema, a risk
below the agent's); the workflow's validator refuses what depends on its state (409) before anything reaches
the history. The change's audit row is written with the change's record, by the workflow's projection write
(runs started before that: here, after the Update). The same updates work from the `temporal` CLI, e.g.
`temporal workflow update execute --workflow-id incident-7 --name retry_step --input '{"step_id": "verify"}'`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, status
from pydantic import BaseModel, Field, ValidationError
from sqlmodel import Session, col, select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.auth import Principal, Responder, Viewer, actor_of, require
from api.deps import SessionDep, TemporalDep
from core.audit import record_audit
from core.payloads import (
    AbortInput,
    AddStepInput,
    RemoveStepInput,
    RetryStepInput,
    UpdateStepParamsInput,
    WorkflowState,
)
from core.playbook import StepSpec, risk_floor_problem
from core.tables import Incident, WorkflowRun, WorkflowStep
from services.agents import all_agent_specs
from workflows.changes import nul_problem

router = APIRouter(prefix="/api/workflows", tags=["workflows"], dependencies=[require("viewer")])
WorkflowId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")]
QUERY_TIMEOUT = 5.0
StepId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


def workflow_known(session: Session, workflow_id: str) -> bool:
    """A workflow with a projection row, or one an incident has started: its first row is written with its
    first agent's step, so a just-started workflow may not have one yet."""
    return session.get(WorkflowRun, workflow_id) is not None or _started_by_incident(session, workflow_id)


def _started_by_incident(session: Session, workflow_id: str) -> bool:
    return session.exec(select(Incident.id).where(Incident.workflow_id == workflow_id).limit(1)).first() is not None


class RetryBody(BaseModel):
    step_id: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,62}$")
    params: dict[str, Any] | None = None


class AbortBody(BaseModel):
    reason: str = Field(default="", max_length=1000)


class AddStepBody(BaseModel):
    step: dict[str, Any]


class ParamsBody(BaseModel):
    params: dict[str, Any]


async def _update(
    request: Request,
    principal: Principal,
    session: SessionDep,
    temporal: TemporalDep,
    workflow_id: str,
    name: str,
    arg: Any,
    action: str,
) -> dict[str, Any]:
    if not workflow_known(session, workflow_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"workflow {workflow_id} does not exist")
    _valid(nul_problem(dataclasses.asdict(arg)))
    actor = actor_of(request, principal)
    arg.origin = actor.origin()
    handle = temporal.get_workflow_handle(workflow_id)
    try:
        state = await handle.execute_update(name, arg, result_type=WorkflowState)
    except WorkflowUpdateFailedError as err:
        reason = str(err.cause.message if hasattr(err.cause, "message") else err.cause)
        raise HTTPException(status.HTTP_409_CONFLICT, f"{name} refused: {reason}") from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise HTTPException(status.HTTP_409_CONFLICT, f"workflow {workflow_id} is no longer running") from None
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"Temporal: {err.message}") from None
    if not state.audits_changes:  # a run started before its projection wrote the change's audit row
        detail = dataclasses.asdict(arg)
        for private in ("actor", "origin"):
            detail.pop(private, None)
        record_audit(session, actor=actor, action=action, target_type="workflow", target_id=workflow_id, after=detail)
        session.commit()
    return dataclasses.asdict(state)


def _valid(problem: str | None) -> None:
    if problem:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problem)


async def _step_agent(temporal: TemporalDep, session: Session, workflow_id: str, step_id: str) -> str | None:
    """The agent of a step of the run (its live state, else its projection), to check new params against."""
    try:
        state = await asyncio.wait_for(
            temporal.get_workflow_handle(workflow_id).query("status", result_type=WorkflowState), QUERY_TIMEOUT
        )
        return next((s.agent for s in state.steps if s.step_id == step_id), None)
    except (TimeoutError, RPCError):
        row = session.exec(
            select(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id, WorkflowStep.step_id == step_id)
        ).first()
        return row.agent if row else None


async def _params_problem(
    temporal: TemporalDep, session: Session, workflow_id: str, step_id: str | None, params: dict[str, Any] | None
) -> str | None:
    if params is None or step_id is None:
        return None
    agent = all_agent_specs(session).get(str(await _step_agent(temporal, session, workflow_id, step_id)))
    problem = agent.params_problem(params) if agent is not None else None
    return f"step {step_id}: {problem}" if problem else None


@router.get("/{workflow_id}")
async def live_state(
    workflow_id: WorkflowId, _principal: Viewer, session: SessionDep, temporal: TemporalDep
) -> dict[str, Any]:
    """The workflow's live state from its `status` query (`live: true`), or else its projection in Postgres."""
    run = session.get(WorkflowRun, workflow_id)
    if run is None and not _started_by_incident(session, workflow_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"workflow {workflow_id} does not exist")
    try:
        state = await asyncio.wait_for(
            temporal.get_workflow_handle(workflow_id).query("status", result_type=WorkflowState), QUERY_TIMEOUT
        )
        return {**dataclasses.asdict(state), "live": True}
    except (TimeoutError, RPCError) as err:
        reason = "no worker answered in time" if isinstance(err, TimeoutError) else err.message
    if run is None:  # started, and nothing written yet
        return {
            "workflow_id": workflow_id,
            "status": "pending",
            "current_steps": [],
            "steps": [],
            "live": False,
            "reason": f"no projection yet, and Temporal: {reason}",
        }
    steps = session.exec(
        select(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id).order_by(col(WorkflowStep.position))
    ).all()
    return {
        **run.model_dump(mode="json", exclude={"seq", "updated_at"}),
        "current_steps": [s.step_id for s in steps if s.status == "running"],
        "steps": [s.model_dump(mode="json", exclude={"id", "seq", "updated_at", "input"}) for s in steps],
        "live": False,
        "reason": f"projection from Postgres: {reason}",
    }


@router.post("/{workflow_id}/retry")
async def retry(
    request: Request,
    workflow_id: WorkflowId,
    body: RetryBody,
    principal: Responder,
    session: SessionDep,
    temporal: TemporalDep,
) -> dict[str, Any]:
    """Run a failed step again (optionally with new params, checked against its agent's schema); completed steps
    do not run again. A step retried with new params is a changed step: a person other than its changer approves it
    if it is risky, never a policy."""
    _valid(await _params_problem(temporal, session, workflow_id, body.step_id, body.params))
    arg = RetryStepInput(step_id=body.step_id, params=body.params, actor=principal.username)
    return await _update(request, principal, session, temporal, workflow_id, "retry_step", arg, "workflow.retry")


@router.post("/{workflow_id}/abort")
async def abort(
    request: Request,
    workflow_id: WorkflowId,
    body: AbortBody,
    principal: Responder,
    session: SessionDep,
    temporal: TemporalDep,
) -> dict[str, Any]:
    """Stop the workflow: running steps are cancelled, the rest skipped."""
    arg = AbortInput(reason=body.reason, actor=principal.username)
    return await _update(request, principal, session, temporal, workflow_id, "abort", arg, "workflow.abort")


@router.post("/{workflow_id}/steps")
async def add_step(
    request: Request,
    workflow_id: WorkflowId,
    body: AddStepBody,
    principal: Responder,
    session: SessionDep,
    temporal: TemporalDep,
) -> dict[str, Any]:
    """Add a step to the running DAG: a valid step, its params fitting its agent's schema, at least as risky as its
    agent (without a `risk` of its own it gets the agent's; a lower one is refused). A risky step added at run time
    waits for a person other than whoever added it, never a policy."""
    step = dict(body.step)
    _valid(nul_problem(step, "step"))
    try:
        spec = StepSpec.model_validate(step)
    except ValidationError as err:
        first = err.errors()[0]
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"step.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        ) from None
    agent = all_agent_specs(session).get(spec.agent)
    if agent is None:
        _valid(f"step {spec.id}: unknown agent {spec.agent!r}")
    else:
        problem = agent.params_problem(spec.params)
        _valid(f"step {spec.id}: {problem}" if problem else risk_floor_problem(spec, agent.default_risk))
        step.setdefault("risk", agent.default_risk)
    arg = AddStepInput(step=step, actor=principal.username)
    return await _update(request, principal, session, temporal, workflow_id, "add_step", arg, "workflow.add_step")


@router.delete("/{workflow_id}/steps/{step_id}")
async def remove_step(
    request: Request,
    workflow_id: WorkflowId,
    step_id: StepId,
    principal: Responder,
    session: SessionDep,
    temporal: TemporalDep,
) -> dict[str, Any]:
    """Remove a step that has not started."""
    arg = RemoveStepInput(step_id=step_id, actor=principal.username)
    return await _update(request, principal, session, temporal, workflow_id, "remove_step", arg, "workflow.remove_step")


@router.patch("/{workflow_id}/steps/{step_id}")
async def edit_step(
    request: Request,
    workflow_id: WorkflowId,
    step_id: StepId,
    body: ParamsBody,
    principal: Responder,
    session: SessionDep,
    temporal: TemporalDep,
) -> dict[str, Any]:
    """Change the params of a step that has not started (checked against its agent's schema). The step is then a
    changed step: a person other than its changer approves it if it is risky, never a policy."""
    _valid(await _params_problem(temporal, session, workflow_id, step_id, body.params))
    arg = UpdateStepParamsInput(step_id=step_id, params=body.params, actor=principal.username)
    return await _update(
        request, principal, session, temporal, workflow_id, "update_step_params", arg, "workflow.update_step_params"
    )
