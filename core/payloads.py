"""Temporal payload types: one input and one result dataclass per workflow, activity, query.

Payloads stay small: ids and bounded summaries; full records live in Postgres.
"""

from dataclasses import dataclass, field
from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

INCIDENT_WORKFLOW = "IncidentWorkflow"  # workflows/incident/, started by name from activities and the API


def incident_workflow_id(incident_id: int, prefix: str = "incident-") -> str:
    return f"{prefix}{incident_id}"


@dataclass
class IncidentContext:
    """What every agent knows about the incident it works on."""

    incident_id: int
    title: str
    service: str
    severity: str
    incident_type: str = "default"
    service_url: str | None = None


@dataclass
class IncidentWorkflowInput:
    incident: IncidentContext
    # The playbook (core.playbook.Playbook as JSON), pinned: later edits never change a running incident.
    playbook: dict[str, Any]
    # Agents the workers provide, for validating steps added at run time.
    known_agents: list[str] = field(default_factory=list)
    # How long a failed workflow waits for retry_step/abort before it ends as failed.
    retry_window_seconds: float = 86_400.0
    # How long an approval request waits for a decision before it expires (a step may say otherwise).
    approval_timeout_seconds: float = 3_600.0
    # Agents registered by URL (known_agents includes them): their steps run the webhook_agent activity.
    webhook_agents: list[str] = field(default_factory=list)
    # The first agent to run writes the workflow's first projection row with its own step, instead of a local
    # activity in the workflow's first task (a round of its own). False: runs started before this existed,
    # whose histories have that local activity.
    agents_open_projection: bool = False
    # An approval's request and decision are recorded to the end even when an abort cancels the step meanwhile,
    # and an abort or the timer never overwrites a decision already taken. False: runs started before this
    # existed, whose histories have those activities' cancellations.
    approvals_outlive_abort: bool = False
    # Each agent's default risk: a step added at run time is at least that risky (the playbook's steps already
    # are, core.playbook.with_agent_defaults). Empty: runs started before this existed.
    agent_risks: dict[str, str] = field(default_factory=dict)
    # Steps added or changed at run time (add_step, update_step_params, retry_step with params) are never
    # pre-approved by a policy, and whoever changed one may not approve it (admins may). False: runs started
    # before this existed.
    guard_changes: bool = False
    # A step whose approval is rejected or expires fails ("not run: approval rejected by …"): the run halts for
    # retry_step or abort and the incident stays open, instead of the step and its dependents being skipped and
    # the run completing (which resolved an incident whose fix never ran). False: runs started before this.
    unapproved_fails: bool = False
    # The incident type's escalation policy (core/escalation.py levels as JSON), pinned at the start: durable timers
    # fire each level while the run waits for a person. Empty: no escalation (and runs started before this).
    escalation: list[dict[str, Any]] = field(default_factory=list)
    # An agent attempt that fails because our own database is unavailable (INFRASTRUCTURE_UNAVAILABLE) is not the
    # step's failure: the run runs it again after a durable backoff (1 s doubling to 30 s) for up to
    # `infrastructure_wait_seconds`, not counted against the step's attempts, and the step's note says what it
    # waits for. False: runs started before this, whose steps spent their attempts on it and failed.
    waits_for_infrastructure: bool = False
    infrastructure_wait_seconds: float = 900.0


@dataclass
class EscalateInput:
    """One escalation level, fired by the run's timer: the escalate_incident activity acts on it unless a person
    acknowledged the incident or it ended."""

    incident_id: int
    workflow_id: str
    level: int  # 1-based
    policy: dict[str, Any]  # the level (core.escalation.EscalationLevel as JSON)
    reason: str  # why the run waits ("step fix failed; waiting for retry_step or abort")


@dataclass
class StepRecord:
    """How an agent activity records its own step in the Postgres projection, so the workflow need not hold its
    task open for a write per step: the activity writes `running` when an attempt starts and the outcome when
    it returns (transitions it cannot see — skips, cancellations, errors — the workflow writes itself)."""

    incident_id: int
    agent: str
    position: int
    runs: int
    started_at: str
    # The write of attempt n uses seq_base + 2n (start) and + 2n + 1 (end); the workflow's own next write
    # is above seq_base + SEQ_BLOCK, so it always wins.
    seq_base: int
    fail_on_negative: bool = True
    check: int = 1  # repeated steps: which check this is, of how many
    checks: int = 1
    # The workflow's first row (in_progress, and its incident moved to in_progress), written by the attempt
    # before anything else when the workflow has not written it itself yet: a first step's activity opens the
    # projection, so the workflow's first task needs no write of its own. Idempotent (its seq).
    opening: "RecordWorkflowInput | None" = None
    # Activity keys (agent_runs) of earlier attempts of this step whose outcome an outage of our database kept
    # from being written: this attempt closes their rows, which would otherwise show them running for ever.
    lost_runs: list[str] = field(default_factory=list)


SEQ_BLOCK = 1000
# The error type of a projection write Postgres refuses for its content: not retried, reported in the state.
POISON_WRITE = "PoisonWrite"
# The error type of an agent attempt that failed because our own database (or other infrastructure of ours) was
# unavailable, not because of the service under investigation. Details: [what is down ("Postgres"), why (one
# line), the attempt's activity key in agent_runs]. Runs with `waits_for_infrastructure` wait it out.
INFRASTRUCTURE_UNAVAILABLE = "InfrastructureUnavailable"
WEBHOOK_AGENT_ACTIVITY = "webhook_agent"  # the one activity that runs every agent registered by URL


@dataclass
class AgentInput:
    incident: IncidentContext
    workflow_id: str
    step_id: str
    # The single dependency's output, or {dependency id: output} at a join; None for a first step.
    previous_agent_output: dict[str, Any] | None = None
    dependency_outputs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    instructions: str = ""
    run: int = 1  # 1 for the first run of the step, 2 after a retry_step or a repeat, …
    record: StepRecord | None = None  # None: the workflow records the step itself
    # Tokens of conversation the agent receives (older messages are summarised); None: CONTEXT_BUDGET_TOKENS.
    context_budget_tokens: int | None = None
    # Filled in by the agent activity itself from Postgres (core/context.py), never sent through Temporal: the
    # incident, previous outputs, system state, user inputs and the conversation, as stored in context_snapshots.
    context: dict[str, Any] | None = None
    agent: str = ""  # the step's agent (a webhook agent's name: they all run as the one webhook_agent activity)
    # The steps of this run whose messages the agent sees: the step and those it depends on (core.dag.lineage), so
    # parallel branches keep to themselves until a join merges them; messages of no step (people, the monitor)
    # and of earlier runs are always seen. None: every message.
    visible_steps: list[str] | None = None


@dataclass
class AgentResult:
    """What an agent returns. `ok` False means the agent ran and its finding is negative (e.g. still down)."""

    ok: bool
    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    # What it found, each {"title", "detail", "severity"?, "source"?, …}: shown on the step and to later agents.
    findings: list[dict[str, Any]] = field(default_factory=list)
    # Investigation agents: True when what they saw means the incident needs nothing more (a `when` condition
    # such as `!steps.investigate_logs.output.resolved` can skip remediation); None when they cannot tell.
    resolved: bool | None = None
    # Messages to append to the conversation besides the summary ({"role", "content", "metadata"}); stored by
    # the agent activity and emptied before the result goes back to the workflow (history stays small).
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DecisionOrigin:
    """Who decided, and from where, for the decision's audit row: filled in by the API (and the Slack and
    email endpoints); a decision sent with the `temporal` CLI has none and is audited as kind `temporal`."""

    user_id: int | None = None
    kind: str = "temporal"  # session | token | slack | email | temporal
    ip: str | None = None
    user_agent: str | None = None


@dataclass
class ApprovalState:
    """A step's approval as the workflow holds it (the `approvals` row is its record)."""

    approval_id: int
    status: str  # pending | approved | rejected | expired
    risk: str
    expires_at: str
    approvers: dict[str, Any] = field(default_factory=dict)
    decided_by: str | None = None
    decided_at: str | None = None
    channel: str | None = None
    comment: str | None = None
    modified_params: dict[str, Any] | None = None
    policy: str | None = None  # the policy that auto-approved it
    changed_by: str | None = None  # who added or changed the step at run time: not its approver


@dataclass
class StepState:
    step_id: str
    agent: str
    position: int
    status: str = "pending"
    attempt: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    output: dict[str, Any] | None = None
    error: str | None = None
    runs: int = 0
    note: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    approval: ApprovalState | None = None


@dataclass
class WorkflowState:
    """Answer of the `status` query and the shape projected into Postgres."""

    workflow_id: str
    incident_id: int
    playbook_id: str
    status: str
    current_steps: list[str]
    steps: list[StepState]
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    playbook_version: int = 1
    changes: list[dict[str, Any]] = field(default_factory=list)
    # The audit log's row of each run-time change is written with the change's record (the projection), not by
    # the caller (IncidentWorkflowInput.guard_changes). False: runs started before, whose caller writes it.
    audits_changes: bool = False
    # The last projection write Postgres refused for its content (it is reported, not retried for ever): the
    # dashboard may be behind the workflow until a later write goes through.
    projection_error: str | None = None


@dataclass
class RetryStepInput:
    """Run failed step(s) again; `params` replaces the step's params (validated) before it runs."""

    step_id: str | None = None  # None: every step that failed
    params: dict[str, Any] | None = None
    actor: str = "unknown"
    origin: DecisionOrigin | None = None  # who and from where, for the change's audit row


@dataclass
class AbortInput:
    reason: str = ""
    actor: str = "unknown"
    origin: DecisionOrigin | None = None  # who and from where, for the change's audit row


@dataclass
class AddStepInput:
    step: dict[str, Any]  # core.playbook.StepSpec as JSON
    actor: str = "unknown"
    origin: DecisionOrigin | None = None  # who and from where, for the change's audit row


@dataclass
class RemoveStepInput:
    step_id: str
    actor: str = "unknown"
    origin: DecisionOrigin | None = None  # who and from where, for the change's audit row


@dataclass
class UpdateStepParamsInput:
    step_id: str
    params: dict[str, Any]
    actor: str = "unknown"
    origin: DecisionOrigin | None = None  # who and from where, for the change's audit row


@dataclass
class DecideApprovalInput:
    """Approve (optionally with edited params) or reject a pending approval, by its id or its step's id.

    The API fills in the caller's role and teams; a caller of the `temporal` CLI is trusted like an admin
    (Temporal access is admin access), e.g. `temporal workflow update execute --workflow-id incident-7
    --name decide_approval --input '{"step_id": "remediate", "decision": "approve", "actor": "alice"}'`."""

    decision: str  # approve | reject
    approval_id: int | None = None
    step_id: str | None = None
    params: dict[str, Any] | None = None  # approve with modifications
    comment: str = ""
    actor: str = "unknown"
    actor_role: str = "admin"
    actor_teams: list[str] = field(default_factory=list)
    channel: str = "temporal"
    origin: DecisionOrigin | None = None


@dataclass
class ApprovalRequest:
    """What the workflow asks the `request_approval` activity to record (and the policies to judge)."""

    workflow_id: str
    incident_id: int
    step_id: str
    run: int
    agent: str
    action: str
    params: dict[str, Any]
    context_summary: str
    risk: str
    impact: str
    expires_at: str
    incident_type: str
    service: str
    changed_by: str | None = None  # added or changed at run time by this person: no policy pre-approves it


@dataclass
class ApprovalTicket:
    approval_id: int
    status: str  # pending, or approved when a policy pre-approved it
    approvers: dict[str, Any] = field(default_factory=dict)
    policy: str | None = None
    channels: list[str] = field(default_factory=list)  # where to send the request (besides the UI)
    # Rejected at once (the remediation budget is spent): by whom and why, as the step's error says it.
    decided_by: str | None = None
    comment: str | None = None


@dataclass
class NotifyApproval:
    approval_id: int
    channel: str  # slack | email | webhook
    kind: str = "request"  # request, or outcome: tell the channel how it was decided (Slack: update the message)


@dataclass
class ApprovalDecided:
    """The decision (or expiry) to record on the approval's row and in its audit log."""

    approval_id: int
    workflow_id: str
    incident_id: int
    step_id: str
    status: str
    decided_by: str
    decided_at: str
    channel: str
    comment: str | None = None
    modified_params: dict[str, Any] | None = None
    origin: DecisionOrigin | None = None  # a person's decision: its audit row is written with the row's change


@dataclass
class RecordWorkflowInput:
    state: WorkflowState
    seq: int
    # With state.audits_changes: who made each of state.changes and from where (None: the `temporal` CLI, or a
    # decision, which its own record audits), for their audit rows. Kept out of the state viewers query.
    origins: list[DecisionOrigin | None] = field(default_factory=list)


@dataclass
class RecordStepInput:
    workflow_id: str
    step: StepState
    seq: int
    input: dict[str, Any] | None = None
    incident_id: int = 0
    # Written by the agent's activity (activities/runs.py), which knows the attempt and its result but not the
    # step's params as the workflow holds them (its rendered ones are in `input`): the stored ones are kept.
    from_agent: bool = False


@dataclass
class RecordBatchInput:
    """Projection writes gathered while the previous batch was being written: one transaction."""

    workflow: RecordWorkflowInput | None = None
    steps: list[RecordStepInput] = field(default_factory=list)
    # The workflow's first row, when no agent has confirmed writing it: written before the steps (they refer
    # to it).
    opening: RecordWorkflowInput | None = None


@dataclass
class RecordResult:
    written: bool


# Search attributes of IncidentWorkflow, as registered by temporal-dev/devserver.json; filter on them in
# the Temporal UI or `temporal workflow list --query 'IncidentId="42"'`.
SA_INCIDENT_ID = SearchAttributeKey.for_keyword("IncidentId")
SA_SERVICE = SearchAttributeKey.for_keyword("Service")
SA_SEVERITY = SearchAttributeKey.for_keyword("Severity")
SA_INCIDENT_TYPE = SearchAttributeKey.for_keyword("IncidentType")
SA_PLAYBOOK_ID = SearchAttributeKey.for_keyword("PlaybookId")


def incident_search_attributes(incident: IncidentContext, playbook_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(SA_INCIDENT_ID, str(incident.incident_id)),
            SearchAttributePair(SA_SERVICE, incident.service),
            SearchAttributePair(SA_SEVERITY, incident.severity),
            SearchAttributePair(SA_INCIDENT_TYPE, incident.incident_type),
            SearchAttributePair(SA_PLAYBOOK_ID, playbook_id),
        ]
    )


SERVICE_MONITOR_WORKFLOW = "ServiceMonitorWorkflow"  # workflows/monitor.py
CHECK_DUE_SERVICES = "check_due_services"  # activities/monitoring/activities.py
PRUNE_UPTIME = "prune_uptime_metrics"  # activities/monitoring/activities.py


@dataclass
class MonitorTick:
    """One tick of a service monitor: run this shard's checks due in the next window (settings say how long)."""

    shard: int = 0
    shards: int = 1


@dataclass
class MonitorTickResult:
    checked: int = 0
    down: int = 0  # results that failed
    silenced: int = 0  # checks skipped by a maintenance window
    outages: int = 0  # services that crossed their failure threshold
    recovered: int = 0
    incidents: list[int] = field(default_factory=list)  # opened or joined by an outage
    lag_p99_ms: float = 0.0  # actual vs scheduled start of this tick's checks
    window_seconds: float = 0.0


@dataclass
class MonitorTotals:
    ticks: int = 0
    checked: int = 0
    down: int = 0
    silenced: int = 0
    outages: int = 0
    recovered: int = 0
    runs: int = 1  # workflow runs, counting continue-as-new


@dataclass
class MonitorInput:
    shard: int = 0
    shards: int = 1
    # Ticks before the workflow continues as new (sooner when Temporal suggests it), keeping its history short.
    ticks_per_run: int = 360
    totals: MonitorTotals = field(default_factory=MonitorTotals)


@dataclass
class MonitorStatus:
    """The `status` query of a service monitor."""

    shard: int
    shards: int
    totals: MonitorTotals
    last_tick: MonitorTickResult | None = None
    last_tick_at: str | None = None
