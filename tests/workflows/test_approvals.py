"""The approval gate on the time-skipping server: expiry at exactly expires_at, approve, approve with edited
params, reject; the validator's refusals; policies that pre-approve."""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session, col, select
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from core.approvals import Approval, ApprovalEvent, ApprovalPolicy
from core.audit import AuditEvent
from core.payloads import AbortInput, DecideApprovalInput, IncidentContext, IncidentWorkflowInput, WorkflowState
from core.tables import AgentRun, IncidentCreate, WorkflowStep
from services.incidents.open import insert_incident
from tests.factories import TEST_ACTOR
from worker.runner import incident_worker

PARAMS = {"target": "web-1", "replicas": 2, "drain": True}


def playbook(**remediate: Any) -> dict[str, Any]:
    return {
        "id": "gated",
        "name": "gated remediation",
        "steps": [
            {"id": "monitor", "agent": "noop", "params": {"summary": "web-1 is down"}},
            {
                "id": "remediate",
                "agent": "noop",
                "depends_on": ["monitor"],
                "requires_approval": True,
                "risk": "high",
                "impact": "web-1 restarts: 30 s without that replica",
                "instructions": "restart web-1",
                "params": PARAMS,
                "approval_timeout_seconds": 600,
                **remediate,
            },
            {"id": "verify", "agent": "noop", "depends_on": ["remediate"]},
        ],
    }


@asynccontextmanager
async def gated_incident(env, engine, settings, **remediate: Any):
    queue = f"ap-{uuid.uuid4().hex}"
    async with incident_worker(env.client, engine, settings, task_queue=queue):
        yield await start_gated(env, engine, settings, queue, **remediate)


async def start_gated(env, engine, settings, queue: str, **remediate: Any) -> WorkflowHandle:
    with Session(engine) as session:
        incident, _ = insert_incident(
            session=session,
            data=IncidentCreate(title="web-1 down", service="web", severity="P2"),
            idempotency_key=None,
            actor=TEST_ACTOR,
            settings=settings.model_copy(update={"workflow_id_prefix": f"ap-{uuid.uuid4().hex[:8]}-"}),
        )
    return await env.client.start_workflow(
        "IncidentWorkflow",
        IncidentWorkflowInput(
            incident=IncidentContext(incident.id, incident.title, incident.service, "P2"),
            playbook=playbook(**remediate),
            known_agents=["noop"],
            agents_open_projection=True,
            approvals_outlive_abort=True,  # as services/incidents/open.py starts them
        ),
        id=incident.workflow_id,
        task_queue=queue,
        result_type=WorkflowState,
    )


async def pending(handle: WorkflowHandle) -> WorkflowState:
    """The state once the remediate step waits for a decision."""
    for _ in range(200):
        state = await handle.query("status", result_type=WorkflowState)
        step = state.steps[1]
        if step.approval is not None and step.approval.status == "pending":
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"no pending approval: {state}")


def decide(decision: str = "approve", **extra: Any) -> DecideApprovalInput:
    fields = {"step_id": "remediate", "actor": "alice", "actor_role": "approver", "channel": "api", **extra}
    return DecideApprovalInput(decision=decision, **fields)


def approval_row(engine, workflow_id: str) -> Approval:
    with Session(engine) as session:
        return session.exec(select(Approval).where(Approval.workflow_id == workflow_id)).one()


def audit(engine, approval_id: int) -> list[str]:
    with Session(engine) as session:
        rows = session.exec(
            select(ApprovalEvent).where(ApprovalEvent.approval_id == approval_id).order_by(col(ApprovalEvent.id))
        )
        return [row.kind for row in rows]


def ran(engine, workflow_id: str) -> set[str]:
    with Session(engine) as session:
        return {r.step_id for r in session.exec(select(AgentRun).where(AgentRun.workflow_id == workflow_id))}


async def test_no_answer_expires_at_exactly_expires_at_and_the_step_never_runs(time_skipping_env, engine, settings):
    async with gated_incident(time_skipping_env, engine, settings) as handle:
        state = await pending(handle)
        assert state.status == "waiting_approval" and state.steps[1].status == "waiting_approval"
        expires_at = datetime.fromisoformat(state.steps[1].approval.expires_at)
        result = await handle.result()  # the test server skips to the timer
    remediate = result.steps[1]
    assert remediate.status == "skipped" and remediate.approval.status == "expired"
    assert remediate.note == f"approval expired at {expires_at.isoformat()}"
    assert result.steps[2].status == "skipped"  # its dependents too
    assert result.status == "completed"
    row = approval_row(engine, handle.id)
    assert row.status == "expired" and row.decided_at == expires_at
    assert row.expires_at - row.requested_at == pytest.approx(timedelta(seconds=600), abs=timedelta(seconds=2))
    assert (row.risk, row.impact, row.action) == ("high", "web-1 restarts: 30 s without that replica", "restart web-1")
    assert row.context_summary == "monitor: web-1 is down"
    assert audit(engine, row.id) == ["requested", "expired"]
    assert ran(engine, handle.id) == {"monitor"}


async def test_approve_runs_the_step(time_skipping_env, engine, settings):
    async with gated_incident(time_skipping_env, engine, settings) as handle:
        await pending(handle)
        state = await handle.execute_update("decide_approval", decide(comment="go"), result_type=WorkflowState)
        assert state.steps[1].approval.status == "approved"
        result = await handle.result()
    assert [s.status for s in result.steps] == ["completed", "completed", "completed"]
    assert ran(engine, handle.id) == {"monitor", "remediate", "verify"}
    row = approval_row(engine, handle.id)
    assert (row.status, row.decided_by, row.channel, row.comment) == ("approved", "alice", "api", "go")
    assert audit(engine, row.id) == ["requested", "decided"]


async def test_approve_with_modifications_runs_the_step_with_the_edited_params(time_skipping_env, engine, settings):
    edited = {"target": "web-2", "replicas": 1, "drain": False}
    async with gated_incident(time_skipping_env, engine, settings) as handle:
        await pending(handle)
        await handle.execute_update("decide_approval", decide(params=edited), result_type=WorkflowState)
        result = await handle.result()
    assert result.steps[1].status == "completed"
    assert result.steps[1].output["data"]["params"] == edited  # what the agent received
    with Session(engine) as session:
        step = session.exec(
            select(WorkflowStep).where(WorkflowStep.workflow_id == handle.id, WorkflowStep.step_id == "remediate")
        ).one()
        assert step.input["params"] == edited
    assert approval_row(engine, handle.id).modified_params == edited


async def test_reject_skips_the_step_and_its_dependents_with_the_reason(time_skipping_env, engine, settings):
    async with gated_incident(time_skipping_env, engine, settings) as handle:
        await pending(handle)
        await handle.execute_update("decide_approval", decide("reject", comment="not during the sale"))
        result = await handle.result()
    assert result.status == "completed"
    assert [s.status for s in result.steps] == ["completed", "skipped", "skipped"]
    assert result.steps[1].note == "approval rejected by alice: not during the sale"
    assert ran(engine, handle.id) == {"monitor"}
    row = approval_row(engine, handle.id)
    assert (row.status, row.comment) == ("rejected", "not during the sale")


async def test_the_validator_refuses_bad_decisions_before_they_reach_the_history(time_skipping_env, engine, settings):
    async with gated_incident(time_skipping_env, engine, settings) as handle:
        await pending(handle)

        async def refused(arg: DecideApprovalInput) -> str:
            with pytest.raises(WorkflowUpdateFailedError) as caught:
                await handle.execute_update("decide_approval", arg)
            return str(caught.value.cause)

        viewer = decide()
        viewer.actor, viewer.actor_role = "victor", "responder"
        assert "victor may not decide this approval (approvers: role approver or above)" in await refused(viewer)
        assert "unknown param 'force'" in await refused(decide(params={**PARAMS, "force": True}))
        assert "param 'replicas' must stay a number, not a string" in await refused(
            decide(params={**PARAMS, "replicas": "2"})
        )
        assert "params can only come with approve" in await refused(decide("reject", params=PARAMS))
        assert "decision must be approve or reject" in await refused(decide("maybe"))
        # What its record could not hold (a `temporal` CLI caller sends anything): refused, never taken.
        assert "actor is longer than 100 characters" in await refused(decide(actor="a" * 101))
        assert "comment contains a NUL character" in await refused(decide(comment="ok\x00"))
        assert "params contain a NUL character" in await refused(decide(params={**PARAMS, "target": "web\x00"}))
        await handle.execute_update("decide_approval", decide())
        assert "step remediate is already approved by alice" in await refused(decide("reject"))
        result = await handle.result()
    assert result.steps[1].status == "completed"
    assert [c["kind"] for c in result.changes] == ["decide_approval"]  # refusals left no trace


async def test_a_signalled_decision_is_ignored_with_a_nul_and_cut_to_fit_its_record_when_too_long(
    time_skipping_env, engine, settings
):
    """A signal cannot be refused: one whose text no record can hold (NUL) is ignored, like any invalid one; over-long
    names are cut to fit their columns, not written by an activity that would fail for ever."""
    async with gated_incident(time_skipping_env, engine, settings) as handle:
        await pending(handle)
        await handle.signal("decide_approval_signal", decide(comment="ok\x00go"))
        state = await handle.query("status", result_type=WorkflowState)  # the query runs after the signal
        assert state.steps[1].approval.status == "pending" and state.changes == []
        await handle.signal("decide_approval_signal", decide(actor="a" * 150, comment="go", channel="c" * 30))
        result = await handle.result()
    assert result.steps[1].status == "completed"
    assert [change["actor"] for change in result.changes] == ["a" * 150]  # the first signal changed nothing
    row = approval_row(engine, handle.id)
    assert (row.status, row.decided_by, row.comment, row.channel) == ("approved", "a" * 150, "go", "c" * 20)
    assert audit(engine, row.id) == ["requested", "decided"]
    with Session(engine) as session:
        [audited] = session.exec(select(AuditEvent).where(AuditEvent.target_id == str(row.id))).all()
    assert (audited.action, audited.actor, audited.actor_kind) == ("approval.approved", "a" * 100, "temporal")


async def test_secrets_shown_redacted_and_sent_back_as_shown_keep_their_real_value(time_skipping_env, engine, settings):
    params = {**PARAMS, "api_token": "tok-4f9c2a7e1b"}
    async with gated_incident(time_skipping_env, engine, settings, params=params) as handle:
        await pending(handle)
        row = approval_row(engine, handle.id)
        assert row.params["api_token"] == "[REDACTED]"  # what the page shows, and so what an edit starts from
        with pytest.raises(WorkflowUpdateFailedError) as caught:  # an edited mask: the secret is lost
            await handle.execute_update("decide_approval", decide(params={**row.params, "api_token": "x[REDACTED]"}))
        assert "param 'api_token' still holds [REDACTED]" in str(caught.value.cause)
        await handle.execute_update("decide_approval", decide(params={**row.params, "replicas": 1}))
        await handle.result()
        history = await handle.fetch_history()
    [received] = [  # what the remediate step's agent was given (its output, and so the state, is redacted)
        json.loads(event.activity_task_scheduled_event_attributes.input.payloads[0].data)["params"]
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.activity_type.name == "noop"
        and json.loads(event.activity_task_scheduled_event_attributes.input.payloads[0].data)["step_id"] == "remediate"
    ]
    assert received == {**params, "replicas": 1}  # the real token
    stored = approval_row(engine, handle.id).modified_params
    assert stored == {**params, "replicas": 1, "api_token": "[REDACTED]"}  # masked where viewers read it


async def test_an_abort_before_the_decision_is_recorded_leaves_the_decision_recorded(temporal_env, engine, settings):
    # The real dev server: a worker that stops hands its cached workflows back after the sticky timeout.
    env, queue = temporal_env, f"ap-{uuid.uuid4().hex}"
    async with incident_worker(env.client, engine, settings, task_queue=queue):
        handle = await start_gated(env, engine, settings, queue)
        await pending(handle)
    # Workflow tasks only (a busy or restarting fleet): the decision's record waits for an activity worker.
    async with incident_worker(env.client, engine, settings, task_queue=queue, no_remote_activities=True):
        await handle.execute_update("decide_approval", decide(comment="go"))
        await handle.execute_update("abort", AbortInput(actor="bob", reason="wrong service"))
    async with incident_worker(env.client, engine, settings, task_queue=queue):
        result = await handle.result()
    assert result.status == "cancelled" and result.steps[1].status == "cancelled"
    assert result.steps[1].approval.status == "approved"
    row = approval_row(engine, handle.id)
    assert (row.status, row.decided_by, row.comment) == ("approved", "alice", "go")  # not pending for ever
    assert audit(engine, row.id) == ["requested", "decided"]
    assert ran(engine, handle.id) == {"monitor"}  # approved, but the abort came first


async def test_an_abort_while_the_request_is_recorded_leaves_no_request_pending(temporal_env, engine, settings):
    env, queue = temporal_env, f"ap-{uuid.uuid4().hex}"
    async with incident_worker(env.client, engine, settings, task_queue=queue):
        with engine.connect() as lock:  # the request's INSERT waits until this transaction ends
            lock.execute(text("LOCK TABLE approvals IN EXCLUSIVE MODE"))
            handle = await start_gated(env, engine, settings, queue)
            waiting = text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query ILIKE '%INSERT INTO approvals%'"
            )
            for _ in range(200):
                with engine.connect() as look:  # a transaction of its own: each sees the activity stats anew
                    if look.execute(waiting).scalar_one():
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the request never reached its INSERT")
            await handle.execute_update("abort", AbortInput(actor="bob", reason="wrong service"))
            lock.rollback()
        result = await handle.result()
    assert result.status == "cancelled" and result.steps[1].status == "cancelled"
    row = approval_row(engine, handle.id)
    assert (row.status, row.decided_by, row.channel) == ("rejected", "workflow", "workflow")
    assert audit(engine, row.id) == ["requested", "decided"]


async def test_a_matching_policy_pre_approves_and_is_recorded_as_such(time_skipping_env, engine, settings):
    with Session(engine) as session:
        session.add(ApprovalPolicy(name="web restarts", service="web", max_risk="high", auto_approve=True,
                                   created_by="root"))  # fmt: skip
        session.commit()
    async with gated_incident(time_skipping_env, engine, settings) as handle:
        result = await handle.result()
    assert [s.status for s in result.steps] == ["completed", "completed", "completed"]
    assert result.steps[1].approval.policy == "web restarts"
    row = approval_row(engine, handle.id)
    assert (row.status, row.decided_by, row.channel) == ("approved", "policy:web restarts", "policy")
    assert audit(engine, row.id) == ["requested", "auto_approved"]


async def test_a_policy_naming_approvers_limits_who_decides(time_skipping_env, engine, settings):
    with Session(engine) as session:
        session.add(ApprovalPolicy(name="db owners", agent="noop", max_risk="critical", approver_users=["dora"],
                                   created_by="root"))  # fmt: skip
        session.commit()
    async with gated_incident(time_skipping_env, engine, settings) as handle:
        await pending(handle)
        with pytest.raises(WorkflowUpdateFailedError, match="update"):
            await handle.execute_update("decide_approval", decide())  # alice is an approver, but not named
        named = decide()
        named.actor = "dora"
        await handle.execute_update("decide_approval", named)
        result = await handle.result()
    assert result.steps[1].approval.decided_by == "dora"


def test_the_audit_log_refuses_update_and_delete(engine, settings):
    with Session(engine) as session:
        incident, _ = insert_incident(
            session=session,
            data=IncidentCreate(title="t", service="s"),
            idempotency_key=None,
            actor=TEST_ACTOR,
            settings=settings,
        )
        approval = Approval(workflow_id=incident.workflow_id, incident_id=incident.id, step_id="s", agent="noop",
                            action="a", risk="high", expires_at=incident.created_at)  # fmt: skip
        session.add(approval)
        session.flush()
        session.add(ApprovalEvent(approval_id=approval.id, kind="requested"))
        session.commit()
    for statement in ("UPDATE approval_events SET kind = 'decided'", "DELETE FROM approval_events"):
        with pytest.raises(Exception, match="approval_events is append-only"), engine.begin() as db:
            db.execute(text(statement))
