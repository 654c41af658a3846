"""The run graph: an incident's playbook run as it actually ran (issue 22).

Three sources make one picture: the run's state (the workflow's `status` query while the run is open, else its
Postgres projection, which the run writes to the end), the pinned playbook version's definition (each step's
`depends_on`, `join`, `when`, approval) and the run-time `changes` (steps added, removed, params edited, retries).
A finished run is read from the projection only: querying a closed workflow makes a worker replay its history.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RPCError

from core.approvals import Approval
from core.conversations import ContextSnapshot
from core.errors import NotFound
from core.payloads import StepState, WorkflowState
from core.playbook import Playbook, StepSpec
from core.playbook_store import PlaybookNotFound, load_playbook
from core.settings import Settings
from core.tables import AgentRun, Incident, WorkflowRun, WorkflowStep
from services.conversations import ConversationFilter, list_snapshots, search_messages, snapshot_public
from services.incidents.detail import get_incident, in_session

LIVE_TIMEOUT = 2.0  # seconds for the `status` query; then the projection is shown, and says so
ENDED = ("completed", "cancelled", "failed")
MESSAGES_SHOWN = 200


class RunNotFound(NotFound):
    pass


@dataclass
class RunNode:
    """One step of the run, with what the playbook said about it and what changed at run time."""

    step_id: str
    agent: str
    position: int
    status: str  # pending | running | waiting_approval | completed | failed | skipped | cancelled | removed
    attempt: int = 0
    runs: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    note: str | None = None
    error: str | None = None
    output: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    join: str = "all"  # all | first_success | at_least N
    when: str | None = None
    requires_approval: bool = False
    risk: str = "low"
    approval: dict[str, Any] | None = None  # status, risk, decided_by, … of its latest approval
    added: bool = False  # added at run time
    params_edited: bool = False  # params changed at run time (edit, or a retry with new params)
    removed: bool = False  # removed at run time: drawn struck through

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or (datetime.now(UTC) if self.status in ("running", "waiting_approval") else None)
        return None if end is None else max(0.0, (end - self.started_at).total_seconds())

    @property
    def cancelled_by_join(self) -> bool:
        return self.status == "cancelled" and (self.note or "").startswith("join ")

    @property
    def gated(self) -> bool:
        return self.requires_approval or self.risk in ("high", "critical") or self.approval is not None

    @property
    def summary(self) -> str:
        return str((self.output or {}).get("summary") or "")


@dataclass
class RunGraph:
    workflow_id: str
    incident_id: int
    status: str
    live: bool  # from the running workflow itself
    source: str  # where the picture came from, in words
    playbook_id: str
    playbook_version: int
    nodes: list[RunNode]
    changes: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def edges(self) -> list[tuple[str, str]]:
        ids = {n.step_id for n in self.nodes}
        return [(dep, n.step_id) for n in self.nodes for dep in n.depends_on if dep in ids]

    def node(self, step_id: str) -> RunNode:
        for node in self.nodes:
            if node.step_id == step_id:
                return node
        raise RunNotFound(f"step {step_id} is not a step of {self.workflow_id}")


def _when(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _join(spec: StepSpec | None) -> str:
    if spec is None:
        return "all"
    return f"at_least {spec.join.count}" if spec.join.strategy == "at_least" else spec.join.strategy


def build_graph(
    state: WorkflowState,
    playbook: Playbook | None,
    *,
    live: bool,
    source: str,
    approvals: dict[str, Approval] | None = None,
) -> RunGraph:
    """The run graph from a run's state, its pinned playbook (None: not found, steps shown without edges but those
    added at run time) and its changes. Pure."""
    specs: dict[str, StepSpec] = {s.id: s for s in playbook.steps} if playbook else {}
    added, edited, removed = set(), set(), []
    for change in state.changes:
        kind, step_id = change.get("kind"), change.get("step_id")
        if kind == "add_step" and isinstance(change.get("step"), dict):
            try:
                specs[str(step_id)] = StepSpec.model_validate(change["step"])
            except ValueError:
                pass
            added.add(step_id)
        elif kind == "update_step_params" or (kind == "retry_step" and change.get("params") is not None):
            edited.add(step_id)
        elif kind == "remove_step" and step_id not in removed:
            removed.append(step_id)
    nodes = [
        _node(step, specs.get(step.step_id), added, edited, (approvals or {}).get(step.step_id)) for step in state.steps
    ]
    present = {n.step_id for n in nodes}
    for step_id in removed:
        if step_id in present:
            continue  # removed, then added again under the same id
        spec = specs.get(str(step_id))
        nodes.append(
            RunNode(
                step_id=str(step_id),
                agent=spec.agent if spec else "?",
                position=len(nodes),
                status="removed",
                note="removed at run time",
                params=dict(spec.params) if spec else {},
                depends_on=list(spec.depends_on) if spec else [],
                join=_join(spec),
                when=spec.when if spec else None,
                added=step_id in added,
                removed=True,
            )
        )
    return RunGraph(
        workflow_id=state.workflow_id,
        incident_id=state.incident_id,
        status=state.status,
        live=live,
        source=source,
        playbook_id=state.playbook_id,
        playbook_version=state.playbook_version,
        nodes=nodes,
        changes=list(state.changes),
        error=state.error,
        started_at=_when(state.started_at),
        finished_at=_when(state.finished_at),
    )


def _node(
    step: StepState, spec: StepSpec | None, added: set[Any], edited: set[Any], approval_row: Approval | None
) -> RunNode:
    approval: dict[str, Any] | None = None
    if step.approval is not None:
        approval = {
            "status": step.approval.status,
            "risk": step.approval.risk,
            "decided_by": step.approval.decided_by,
            "comment": step.approval.comment,
            "policy": step.approval.policy,
            "id": step.approval.approval_id,
        }
    elif approval_row is not None:
        approval = {
            "status": approval_row.status,
            "risk": approval_row.risk,
            "decided_by": approval_row.decided_by,
            "comment": approval_row.comment,
            "policy": approval_row.policy_id,
            "id": approval_row.id,
        }
    return RunNode(
        step_id=step.step_id,
        agent=step.agent,
        position=step.position,
        status=step.status,
        attempt=step.attempt,
        runs=step.runs,
        started_at=_when(step.started_at),
        finished_at=_when(step.finished_at),
        note=step.note,
        error=step.error,
        output=step.output,
        params=dict(step.params or {}),
        depends_on=list(spec.depends_on) if spec else [],
        join=_join(spec),
        when=spec.when if spec else None,
        requires_approval=spec.requires_approval if spec else False,
        risk=spec.risk if spec else "low",
        approval=approval,
        added=step.step_id in added,
        params_edited=step.step_id in edited,
    )


# ---- reading a run ------------------------------------------------------------------------------------------


@dataclass
class _Stored:
    incident: Incident
    run: WorkflowRun | None
    steps: list[WorkflowStep]
    approvals: dict[str, Approval]
    playbook: Playbook | None


def run_ids(*, session: Session, incident: Incident) -> list[str]:
    """The incident's runs, first to latest: `incident-N`, `incident-N-run2`, … (the latest may have no row yet)."""
    rows = session.exec(select(WorkflowRun.workflow_id).where(WorkflowRun.incident_id == incident.id)).all()
    ids = set(rows)
    if incident.workflow_id:
        ids.add(incident.workflow_id)
    return sorted(ids, key=_run_number)


def _run_number(workflow_id: str) -> tuple[int, str]:
    found = re.search(r"-run(\d+)$", workflow_id)
    return (int(found.group(1)) if found else 1, workflow_id)


def _stored(session: Session, settings: Settings, incident_id: int, workflow_id: str | None) -> _Stored:
    incident = get_incident(session=session, incident_id=incident_id)
    wanted = workflow_id or incident.workflow_id
    if not wanted or wanted not in run_ids(session=session, incident=incident):
        raise RunNotFound(f"incident {incident_id} has no run {wanted}" if wanted else "the incident has no run")
    run = session.get(WorkflowRun, wanted)
    steps = list(
        session.exec(
            select(WorkflowStep).where(WorkflowStep.workflow_id == wanted).order_by(col(WorkflowStep.position))
        )
    )
    approvals: dict[str, Approval] = {}
    for row in session.exec(select(Approval).where(Approval.workflow_id == wanted).order_by(col(Approval.run))):
        approvals[row.step_id] = row  # the latest run's request wins
    playbook_id = run.playbook_id if run else incident.playbook_id
    version = run.playbook_version if run else incident.playbook_version
    try:
        playbook: Playbook | None = load_playbook(
            session=session, settings=settings, playbook_id=playbook_id, version=version
        )
    except PlaybookNotFound:
        playbook = None
    session.expunge_all()
    return _Stored(incident, run, steps, approvals, playbook)


def _projected(stored: _Stored, wanted: str) -> WorkflowState:
    run, incident = stored.run, stored.incident
    assert incident.id is not None
    return WorkflowState(
        workflow_id=wanted,
        incident_id=incident.id,
        playbook_id=run.playbook_id if run else incident.playbook_id,
        playbook_version=run.playbook_version if run else incident.playbook_version,
        status=run.status if run else "pending",
        current_steps=[s.step_id for s in stored.steps if s.status == "running"],
        steps=[
            StepState(
                step_id=s.step_id,
                agent=s.agent,
                position=s.position,
                status=s.status,
                attempt=s.attempt,
                started_at=s.started_at.isoformat() if s.started_at else None,
                finished_at=s.finished_at.isoformat() if s.finished_at else None,
                output=s.output,
                error=s.error,
                runs=s.runs,
                note=s.note,
                params=dict((s.input or {}).get("params") or {}),
            )
            for s in stored.steps
        ],
        error=run.error if run else None,
        started_at=run.started_at.isoformat() if run and run.started_at else None,
        finished_at=run.finished_at.isoformat() if run and run.finished_at else None,
        changes=list(run.changes) if run else [],
    )


async def load_run(
    *, engine: Engine, temporal: Client | None, settings: Settings, incident_id: int, workflow_id: str | None = None
) -> RunGraph:
    """The incident's run (its latest, or `workflow_id`, which must be one of its runs) as a RunGraph."""
    stored = await in_session(engine, lambda s: _stored(s, settings, incident_id, workflow_id))
    wanted = workflow_id or stored.incident.workflow_id or ""
    run = stored.run
    ended = run is not None and run.status in ENDED and run.finished_at is not None
    reason = "the run has ended: its record in Postgres is final"
    if not ended and temporal is not None:
        try:
            state = await asyncio.wait_for(
                temporal.get_workflow_handle(wanted).query("status", result_type=WorkflowState), LIVE_TIMEOUT
            )
            return build_graph(state, stored.playbook, live=True, source="live", approvals=stored.approvals)
        except (TimeoutError, RPCError) as err:
            reason = "no worker answered in time" if isinstance(err, TimeoutError) else f"Temporal: {err.message}"
    elif not ended:
        reason = "Temporal is not connected"
    return build_graph(
        _projected(stored, wanted),
        stored.playbook,
        live=False,
        source=f"projection ({reason})",
        approvals=stored.approvals,
    )


# ---- one step's detail ----------------------------------------------------------------------------------------


@dataclass
class StepDetail:
    node: RunNode
    input: dict[str, Any] | None  # what the agent got besides its context (params, dependencies' outputs)
    messages: list[dict[str, Any]]
    snapshots: list[dict[str, Any]]  # every version: what the agent saw, attempt by attempt
    attempts: list[AgentRun]
    approvals: list[Approval]


def step_detail(*, session: Session, graph: RunGraph, step_id: str) -> StepDetail:
    """Everything about one step of a run: its messages, context snapshots, input, attempts and approvals."""
    node = graph.node(step_id)
    row = session.exec(
        select(WorkflowStep).where(WorkflowStep.workflow_id == graph.workflow_id, WorkflowStep.step_id == step_id)
    ).first()
    where = ConversationFilter(incident=graph.incident_id, workflow=graph.workflow_id, step=step_id)
    messages, _ = search_messages(
        session=session, where=where, order="oldest", limit=MESSAGES_SHOWN, cursor=None, query_vector=None
    )
    snapshots: list[ContextSnapshot] = list_snapshots(session=session, workflow_id=graph.workflow_id, step_id=step_id)
    attempts = session.exec(
        select(AgentRun)
        .where(AgentRun.workflow_id == graph.workflow_id, AgentRun.step_id == step_id)
        .order_by(col(AgentRun.id))
    ).all()
    approvals = session.exec(
        select(Approval)
        .where(Approval.workflow_id == graph.workflow_id, Approval.step_id == step_id)
        .order_by(col(Approval.run))
    ).all()
    session.expunge_all()  # read after the session ends (its commit would expire them)
    return StepDetail(
        node=node,
        input=row.input if row else None,
        messages=messages,
        snapshots=[snapshot_public(s, with_context=True) for s in snapshots],
        attempts=list(attempts),
        approvals=list(approvals),
    )


# ---- comparing runs --------------------------------------------------------------------------------------------


@dataclass
class CompareRow:
    step_id: str
    cells: list[RunNode | None]  # one per run, None: the step was not in that run
    differs: bool  # status, attempts or output summary differ between the runs


def compare(graphs: list[RunGraph]) -> list[CompareRow]:
    """Per step id (in the order the runs first had them), its node in each run and whether the runs differ."""
    order: list[str] = []
    for graph in graphs:
        order += [n.step_id for n in graph.nodes if n.step_id not in order]
    rows = []
    for step_id in order:
        cells: list[RunNode | None] = []
        for graph in graphs:
            try:
                cells.append(graph.node(step_id))
            except RunNotFound:
                cells.append(None)
        seen = {(c.status, c.attempt, c.runs, c.summary) if c else None for c in cells}
        rows.append(CompareRow(step_id, cells, len(seen) > 1))
    return rows


async def load_runs(*, engine: Engine, temporal: Client | None, settings: Settings, incident_id: int) -> list[RunGraph]:
    """Every run of the incident, first to latest."""

    def ids(session: Session) -> list[str]:
        return run_ids(session=session, incident=get_incident(session=session, incident_id=incident_id))

    found = await in_session(engine, ids)
    return [
        await load_run(engine=engine, temporal=temporal, settings=settings, incident_id=incident_id, workflow_id=w)
        for w in found
    ]
