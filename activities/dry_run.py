"""The activities of a playbook's dry run (PlaybookDryRunWorkflow), in place of those with effects.

- `simulate_agent`: an agent that declares `simulation="read"` (core/agents.py) runs for real, with a context read
  from Postgres and nothing written (no agent_runs, no conversation, no context snapshot, no projection: it gets no
  database at all); any other agent — commands, webhooks, the LLM, plugins and webhook agents that declare nothing —
  never runs: its `describe(input)` (or a generic line) says what it would do.
- `preview_approval`: who the approval gate would ask, or which policy would approve it (the policies and the
  remediation budget, as `request_approval` judges them), with nothing recorded and nobody notified.
- `record_dry_run`: the run's state, status and report on its `playbook_dry_runs` row (newest write wins), with a
  `dryrun.updated` event for the dry run's page.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import msgspec
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.base import AgentDeps
from activities.chain import ChainAgents
from activities.heartbeat import attempt
from activities.registry import agent_classes, agent_specs
from activities.remediation_ledger import BUDGETED_AGENTS, incident_budget
from activities.runs import AgentRunLog
from core.agents import AgentSpec
from core.approval_rules import approvers_for
from core.approvals import ApprovalPolicy, approvers_of, first_match
from core.compress import compress
from core.context import build_context
from core.db import autocommit_rows
from core.dry_run import (
    DRY_RUN_EVENT,
    PREVIEW_APPROVAL,
    RECORD_DRY_RUN,
    SIMULATE_AGENT,
    ApprovalPreview,
    DryRunActivityDefs,
    DryRunRecord,
)
from core.dry_run_report import build_report, row_status
from core.events import publish
from core.payloads import AgentInput, AgentResult, ApprovalRequest, RecordResult
from core.playbook_store import pinned_approvers
from core.redact import redact, redact_text
from core.settings import Settings
from core.tables import Event, utcnow
from core.webhook_agents import WebhookAgent

# The incident and service parts of activities/conversation.py's context load: what a read agent is given.
_READ_CONTEXT = text(
    """
SELECT
    (SELECT jsonb_build_object('description', i.description, 'status', i.status, 'created_at', i.created_at)
     FROM incidents AS i WHERE i.id = :incident_id) AS incident,
    (SELECT jsonb_build_object('name', sv.name) || sv.config || jsonb_build_object('dependency_checks',
              (SELECT coalesce(jsonb_object_agg(d.name, d.config -> 'check'), '{}'::jsonb) FROM services AS d
               WHERE d.name IN (SELECT jsonb_array_elements_text(sv.config -> 'dependencies'))))
     FROM services AS sv WHERE sv.name = :service) AS service
"""
)
_RECORD = text(
    "UPDATE playbook_dry_runs SET state = CAST(:state AS jsonb), report = CAST(:report AS jsonb), status = :status, "
    "finished_at = CASE WHEN :ended THEN COALESCE(finished_at, :now) ELSE finished_at END "
    "WHERE id = :id AND COALESCE(CAST(report ->> 'seq' AS integer), -1) < :seq RETURNING workflow_id"
)
CHAIN_AGENTS = ("monitor", "investigate", "remediate", "verify", "noop", "sleep")


class DryRunActivities(DryRunActivityDefs):
    """Built by the worker with its guarded HTTP client. The agents it runs get no database (AgentDeps.engine None,
    an AgentRunLog without one): an agent that declared it only reads could not record anything even by mistake."""

    def __init__(self, engine: Engine, http: httpx.AsyncClient, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._chain = ChainAgents(http, check_timeout=settings.check_timeout_seconds, runs=AgentRunLog(None))
        deps = AgentDeps(http=http, settings=settings, engine=None)
        self._agents: dict[str, Any] = {cls.spec.name: cls(deps) for cls in agent_classes()}

    # ---- agents -----------------------------------------------------------------------------------

    @activity.defn(name=SIMULATE_AGENT)
    async def simulate_agent(self, input: AgentInput) -> AgentResult:
        spec = agent_specs().get(input.agent)
        simulated: dict[str, Any] = {"params": redact(input.params), "instructions": redact_text(input.instructions)}
        if spec is not None:
            problem = spec.params_problem(input.params)
            if problem:  # as the real run would refuse them
                raise ApplicationError(f"{spec.name}: {problem}", type="InvalidParams", non_retryable=True)
        if spec is not None and spec.simulation == "read":
            input.context = await asyncio.to_thread(self._context, input)
            result = await self._read(input)
            result.messages = []  # a dry run keeps no conversation
            result.data["dry_run"] = {**simulated, "mode": "read"}
            return result
        would = await self._describe(spec, input)
        return AgentResult(
            ok=True,
            summary=would,
            data={"dry_run": {**simulated, "mode": "describe", "would": would}, "attempt": attempt()},
        )

    async def _read(self, input: AgentInput) -> AgentResult:
        if input.agent in CHAIN_AGENTS:
            result: AgentResult = await getattr(self._chain, input.agent)(input)
            return result
        result = await self._agents[input.agent].run(input)
        return result

    async def _describe(self, spec: AgentSpec | None, input: AgentInput) -> str:
        agent = self._agents.get(input.agent)
        if agent is not None and callable(getattr(agent, "describe", None)):
            return str(agent.describe(input))
        if input.agent == "sleep":
            return f"would wait {float(input.params.get('seconds', 1)):g} s"
        if spec is None:
            row = await asyncio.to_thread(self._webhook_agent, input.agent)
            if row is None or not row.enabled:
                state = "disabled" if row is not None else "not registered"
                raise ApplicationError(f"agent {input.agent!r} is {state}", type="UnknownAgent", non_retryable=True)
            return (
                f"would POST the step's input and context to webhook agent {row.name} at {row.url} (signed with its "
                "secret); a webhook agent is never called by a dry run"
            )
        params = json.dumps(redact(input.params), sort_keys=True)
        return redact_text(
            f"would run {spec.source} agent {spec.name} with params {params}; it does not declare that it only "
            "reads (simulation: read), so a dry run never runs it",
            2000,
        )

    def _webhook_agent(self, name: str) -> WebhookAgent | None:
        with Session(self._engine) as session:
            return session.exec(select(WebhookAgent).where(WebhookAgent.name == name)).first()

    def _context(self, input: AgentInput) -> dict[str, Any]:
        """The context a read agent gets in a real run, read only: the incident (a past incident's row when the dry
        run was made from one), its step, its dependencies' outputs and the monitored service's definition; no
        conversation is loaded or summarised, no snapshot stored."""
        params = {"incident_id": input.incident.incident_id, "service": input.incident.service}
        [row] = autocommit_rows(self._engine, _READ_CONTEXT, params)
        budget = input.context_budget_tokens or self._settings.context_budget_tokens
        return build_context(
            input,
            attempt=attempt(),
            incident_row=row.incident,
            health=None,
            service=row.service,
            history=[],
            user_inputs=[],
            compressed=compress([], budget),
            total_messages=0,
            budget=budget,
            summary_id=None,
        )

    # ---- approvals --------------------------------------------------------------------------------

    @activity.defn(name=PREVIEW_APPROVAL)
    def preview_approval(self, request: ApprovalRequest) -> ApprovalPreview:
        with Session(self._engine) as session:
            policies = list(session.exec(select(ApprovalPolicy).where(col(ApprovalPolicy.enabled))))
            policy = first_match(
                policies,
                agent=request.agent,
                incident_type=request.incident_type,
                service=request.service,
                risk=request.risk,
            )
            spent = None
            if request.agent in BUDGETED_AGENTS and request.incident_id > 0:  # made from a past incident: its budget
                budget = incident_budget(request.incident_id, request.run, self._settings)
                spent = budget.spent(session) if budget is not None else None
            # The step's own approvers, else its playbook's (the version this dry run runs), else the policy's.
            named = pinned_approvers(
                session=session, workflow_id=request.workflow_id, incident_id=request.incident_id,
                step_id=request.step_id,
            )  # fmt: skip
        name = policy.name if policy is not None else None
        approvers = approvers_for(approvers_of(policy), *named)
        if spent is not None:
            return ApprovalPreview("would_reject", approvers, name, spent)
        if policy is not None and policy.auto_approve:
            return ApprovalPreview("would_auto_approve", {}, name)
        return ApprovalPreview("would_ask", approvers, name)

    # ---- the row ----------------------------------------------------------------------------------

    @activity.defn(name=RECORD_DRY_RUN)
    def record_dry_run(self, record: DryRunRecord) -> RecordResult:
        state = record.state
        status = row_status(state)
        values = {
            "id": record.dry_run_id,
            "seq": record.seq,
            "state": _json(state),
            "report": json.dumps(build_report(state, record.seq), default=str),
            "status": status,
            "ended": status != "running",
            "now": utcnow(),
        }
        with Session(self._engine) as session:
            written = session.execute(_RECORD, values).first()
            if written is not None:
                data = {"dry_run_id": record.dry_run_id, "status": status, "playbook_id": state.playbook_id}
                publish(session, Event(kind=DRY_RUN_EVENT, workflow_id=state.workflow_id, data=data))
            session.commit()
        return RecordResult(written=written is not None)

    def all(self) -> list[Any]:
        return [self.simulate_agent, self.preview_approval, self.record_dry_run]


def _json(state: Any) -> str:
    return msgspec.json.encode(state).decode()
