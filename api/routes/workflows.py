"""Live workflow state and run-time control: retry a failed step, abort, add/remove/edit steps.

Each call is a Temporal Update on IncidentWorkflow, through services/workflow_control.py (the incident page uses the
same functions, so both apply the same checks and write the same audit rows): what can be checked before the Update
is sent is a 422 (a NUL anywhere, a step that is not a valid step, params that do not fit the agent's schema, a risk
below the agent's, an edited redacted value); the workflow's validator refuses what depends on its state (409)
before anything reaches the history. The change's audit row is written with the change's record, by the workflow's
projection write (runs started before that: after the Update). The same updates work from the `temporal` CLI, e.g.
`temporal workflow update execute --workflow-id incident-7 --name retry_step --input '{"step_id": "verify"}'`.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from temporalio.service import RPCError

from api.auth import Responder, Viewer, actor_of, require
from api.deps import SessionDep, TemporalDep
from services import workflow_control as control

router = APIRouter(prefix="/api/workflows", tags=["workflows"], dependencies=[require("viewer")])
WorkflowId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")]
StepId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
# Kept for callers that imported it from here.
workflow_known = control.workflow_known


class RetryBody(BaseModel):
    step_id: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,62}$")
    params: dict[str, Any] | None = None


class AbortBody(BaseModel):
    reason: str = Field(default="", max_length=1000)


class AddStepBody(BaseModel):
    step: dict[str, Any]


class ParamsBody(BaseModel):
    params: dict[str, Any]


@router.get("/{workflow_id}", response_model=None)
async def live_state(
    workflow_id: WorkflowId, _principal: Viewer, session: SessionDep, temporal: TemporalDep
) -> dict[str, Any] | JSONResponse:
    """The workflow's live state from its `status` query (`live: true`), or else its projection in Postgres. A
    workflow that has finished is answered from the projection at once: its last write, made before the workflow
    closed, is its final state (each step's params and approval included), and a query would make a worker replay
    the whole history to say the same."""
    run, steps = control.projection(session, workflow_id)  # one round trip: for a finished run, the whole answer
    if run is None and not control.started_by_incident(session, workflow_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"workflow {workflow_id} does not exist")
    if run is not None and control.finished(run):
        # Already JSON-ready: straight out, without FastAPI's walk of every value (jsonable_encoder).
        final = control.projected_state(run, steps)
        return JSONResponse({**final, "live": False, "reason": f"finished ({run.status}): its final state"})
    try:
        return {**dataclasses.asdict(await control.live_state(temporal, workflow_id)), "live": True}
    except (TimeoutError, RPCError) as err:
        reason = "no worker answered in time" if isinstance(err, TimeoutError) else err.message
    session.expire_all()  # the query took a while: read the projection as it is now
    run, steps = control.projection(session, workflow_id)
    if run is None:  # started, and nothing written yet
        return {
            "workflow_id": workflow_id,
            "status": "pending",
            "current_steps": [],
            "steps": [],
            "live": False,
            "reason": f"no projection yet, and Temporal: {reason}",
        }
    return {**control.projected_state(run, steps), "live": False, "reason": f"projection from Postgres: {reason}"}


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
    state = await control.retry_step(
        session=session, temporal=temporal, workflow_id=workflow_id, step_id=body.step_id, params=body.params,
        actor=actor_of(request, principal),
    )  # fmt: skip
    return dataclasses.asdict(state)


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
    state = await control.abort(
        session=session, temporal=temporal, workflow_id=workflow_id, reason=body.reason,
        actor=actor_of(request, principal),
    )  # fmt: skip
    return dataclasses.asdict(state)


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
    state = await control.add_step(
        session=session, temporal=temporal, workflow_id=workflow_id, step=body.step,
        actor=actor_of(request, principal),
    )  # fmt: skip
    return dataclasses.asdict(state)


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
    state = await control.remove_step(
        session=session, temporal=temporal, workflow_id=workflow_id, step_id=step_id,
        actor=actor_of(request, principal),
    )  # fmt: skip
    return dataclasses.asdict(state)


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
    state = await control.edit_step_params(
        session=session, temporal=temporal, workflow_id=workflow_id, step_id=step_id, params=body.params,
        actor=actor_of(request, principal),
    )  # fmt: skip
    return dataclasses.asdict(state)
