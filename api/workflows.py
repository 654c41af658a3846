"""Live workflow state and run-time control: retry a failed step, abort, add/remove/edit steps.

Each call is a Temporal Update on IncidentWorkflow; its validator refuses bad changes (409 with the reason)
before anything reaches the history. The same updates work from the `temporal` CLI, e.g.
`temporal workflow update execute --workflow-id incident-7 --name retry_step --input '{"step_id": "verify"}'`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, status
from pydantic import BaseModel, Field
from sqlmodel import Session, col, select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.agent_service import all_agent_specs
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
from core.tables import Incident, WorkflowRun, WorkflowStep

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
    detail = dataclasses.asdict(arg)
    detail.pop("actor", None)
    record_audit(
        session,
        actor=actor_of(request, principal),
        action=action,
        target_type="workflow",
        target_id=workflow_id,
        after=detail,
    )
    session.commit()
    return dataclasses.asdict(state)


@router.get("/{workflow_id}")
async def live_state(
    workflow_id: WorkflowId, principal: Viewer, session: SessionDep, temporal: TemporalDep
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
    """Run a failed step again (optionally with new params); completed steps do not run again."""
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
    """Add a step to the running DAG (its params checked against its agent's schema; without a `risk` of its own
    it gets its agent's default risk, as in a stored playbook, so a risky agent still waits for approval)."""
    step = dict(body.step)
    agent = all_agent_specs(session).get(str(step.get("agent")))
    if agent is not None:
        problem = agent.params_problem(step.get("params") or {})
        if problem:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"step {step.get('id')}: {problem}")
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
    """Change the params of a step that has not started."""
    arg = UpdateStepParamsInput(step_id=step_id, params=body.params, actor=principal.username)
    return await _update(
        request, principal, session, temporal, workflow_id, "update_step_params", arg, "workflow.update_step_params"
    )
