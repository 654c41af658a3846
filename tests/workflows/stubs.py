"""Stub activities for the fast tier: IncidentWorkflow's own logic (the DAG, joins, approvals, retries, run-time
changes) on the time-skipping server, with no Postgres and no real agents. Each stub is registered under the real
activity's name and does the least that lets the workflow go on; the real ones are tested on real parts elsewhere.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from core.activity_defs import (
    ESCALATE_INCIDENT,
    NOTIFY_APPROVAL,
    RECORD_APPROVAL_DECISION,
    RECORD_BATCH,
    REQUEST_APPROVAL,
)
from core.payloads import (
    INFRASTRUCTURE_UNAVAILABLE,
    AgentInput,
    AgentResult,
    ApprovalDecided,
    ApprovalRequest,
    ApprovalTicket,
    EscalateInput,
    IncidentContext,
    IncidentWorkflowInput,
    NotifyApproval,
    RecordBatchInput,
    RecordResult,
)
from workflows.incident import IncidentWorkflow

AGENT_RISKS = {"noop": "low", "seq": "low", "fail": "low", "fix": "high", "needs_db": "low"}


@dataclass
class Stubs:
    """What the stubs were asked to do, for the tests to read."""

    ran: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    requests: list[ApprovalRequest] = field(default_factory=list)
    decisions: list[ApprovalDecided] = field(default_factory=list)
    batches: int = 0
    escalations: list[EscalateInput] = field(default_factory=list)
    acknowledged: bool = False  # what escalate_incident finds: a person has the incident
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    down: int = 0  # how many more tries of needs_db find our database unavailable
    lost: list[list[str]] = field(default_factory=list)  # the lost_runs each try of needs_db was handed
    notes: list[str] = field(default_factory=list)  # step notes the projection was sent, in order

    @activity.defn(name="needs_db")
    async def needs_db(self, input: AgentInput) -> AgentResult:
        """An agent as it fails while our database is down (activities/runs.py), `down` more times."""
        self.ran.append((input.step_id, input.params))
        self.lost.append(list(input.record.lost_runs) if input.record is not None else [])
        if self.down > 0:
            self.down -= 1
            why, key = "connection refused", f"try-{len(self.ran)}"  # key: the try's agent_runs key
            raise ApplicationError(
                f"Postgres unavailable: {why}", "Postgres", why, key, type=INFRASTRUCTURE_UNAVAILABLE
            )
        return AgentResult(ok=True, summary="done")

    def activities(self) -> list[Any]:
        @activity.defn(name="noop")
        async def noop(input: AgentInput) -> AgentResult:
            self.ran.append((input.step_id, input.params))
            return AgentResult(ok=bool(input.params.get("ok", True)), summary=input.params.get("summary", "done"))

        @activity.defn(name="seq")
        async def seq(input: AgentInput) -> AgentResult:  # check n answers params.oks[n-1]: a flapping service
            check = input.record.check if input.record is not None else 1
            self.ran.append((input.step_id, input.params))
            return AgentResult(ok=bool(input.params["oks"][check - 1]), summary=f"check {check}")

        @activity.defn(name="fix")
        async def fix(input: AgentInput) -> AgentResult:  # a risky agent (risk high in AGENT_RISKS)
            self.ran.append((input.step_id, input.params))
            return AgentResult(ok=True, summary="fixed")

        @activity.defn(name="fail")
        async def fail(input: AgentInput) -> AgentResult:
            self.ran.append((input.step_id, input.params))
            raise ApplicationError("it broke", non_retryable=True)

        @activity.defn(name=RECORD_BATCH)
        async def record_batch(_batch: RecordBatchInput) -> RecordResult:
            self.batches += 1
            self.notes.extend(s.step.note for s in _batch.steps if s.step.note)
            return RecordResult(written=True)

        @activity.defn(name=REQUEST_APPROVAL)
        async def request_approval(request: ApprovalRequest) -> ApprovalTicket:
            self.requests.append(request)
            return ApprovalTicket(approval_id=next(self.ids), status="pending", approvers={"role": "approver"})

        @activity.defn(name=RECORD_APPROVAL_DECISION)
        async def record_approval_decision(decided: ApprovalDecided) -> bool:
            self.decisions.append(decided)
            return True

        @activity.defn(name=NOTIFY_APPROVAL)
        async def notify_approval(_notify: NotifyApproval) -> bool:
            return True

        @activity.defn(name=ESCALATE_INCIDENT)
        async def escalate_incident(input: EscalateInput) -> bool:
            if self.acknowledged:
                return False
            self.escalations.append(input)
            return True

        return [noop, seq, fix, fail, record_batch, request_approval, record_approval_decision, notify_approval,
                escalate_incident, self.needs_db]  # fmt: skip


@asynccontextmanager
async def fast_worker(client: Client) -> AsyncIterator[tuple[str, Stubs]]:
    stubs = Stubs()
    queue = f"fast-{uuid.uuid4().hex}"
    async with Worker(client, task_queue=queue, workflows=[IncidentWorkflow], activities=stubs.activities()):
        yield queue, stubs


async def start(client: Client, queue: str, steps: list[dict[str, Any]], **input: Any) -> WorkflowHandle[Any, Any]:
    """An IncidentWorkflow over these steps, with the flags every new incident gets."""
    workflow_input = IncidentWorkflowInput(
        incident=IncidentContext(incident_id=1, title="t", service="web", severity="P2"),
        playbook={"id": "fast", "name": "fast", "steps": steps},
        known_agents=sorted(AGENT_RISKS),
        agents_open_projection=True,
        approvals_outlive_abort=True,
        agent_risks=AGENT_RISKS,
        guard_changes=True,
        **{"retry_window_seconds": 0, "unapproved_fails": True, **input},
    )
    return await client.start_workflow(
        IncidentWorkflow.run, workflow_input, id=f"fast-{uuid.uuid4().hex[:12]}", task_queue=queue
    )
