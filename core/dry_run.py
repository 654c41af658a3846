"""A playbook's dry run as Temporal sees it: the workflow's name and input, the activities it calls instead of the
ones with side effects, and its search attributes. Imported by the workflow (pure: temporalio and our payloads).

A dry run is `PlaybookDryRunWorkflow` (workflows/incident/dry_run.py): the incident workflow's own engine over a
playbook, on the same task queue, except that every agent runs through `simulate_agent` (it runs only agents that
declare `simulation="read"` and describes the others), approvals are judged by `preview_approval` (nobody is asked,
nothing waits) and the run's state goes to its `playbook_dry_runs` row through `record_dry_run`, never to an
incident's projection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from core.payloads import (
    SA_INCIDENT_TYPE,
    SA_PLAYBOOK_ID,
    SA_SERVICE,
    SA_SEVERITY,
    AgentInput,
    AgentResult,
    ApprovalRequest,
    IncidentContext,
    IncidentWorkflowInput,
    RecordResult,
    WorkflowState,
)

DRY_RUN_WORKFLOW = "PlaybookDryRunWorkflow"
SIMULATE_AGENT = "simulate_agent"
PREVIEW_APPROVAL = "preview_approval"
RECORD_DRY_RUN = "record_dry_run"
# The events a dry run's page listens to (live.js dispatches them on <body> as `live-dryrun`).
DRY_RUN_EVENT = "dryrun.updated"


def dry_run_workflow_id(dry_run_id: int, prefix: str = "incident-") -> str:
    """`dry-run-<id>`; a deployment sharing its namespace (WORKFLOW_ID_PREFIX other than the default) puts its prefix
    in front, as its incidents do."""
    return f"dry-run-{dry_run_id}" if prefix == "incident-" else f"{prefix}dry-run-{dry_run_id}"


@dataclass
class DryRunInput:
    """The run as an incident's would be started (the pinned playbook, the flags), and the row it reports to."""

    run: IncidentWorkflowInput
    dry_run_id: int


@dataclass
class ApprovalPreview:
    """What the approval gate would do with a step, judged by the same policies, without recording anything."""

    outcome: str  # would_ask | would_auto_approve | would_reject
    approvers: dict[str, Any] = field(default_factory=dict)
    policy: str | None = None  # the policy that matched (auto-approving it, or naming its approvers)
    reason: str | None = None  # would_reject: why (the incident's remediation budget is spent)


@dataclass
class DryRunRecord:
    """The dry run's whole state (steps included: it is one row), written over the row's last one."""

    dry_run_id: int
    state: WorkflowState
    seq: int


class DryRunActivityDefs(ABC):
    """Implemented by `activities.dry_run.DryRunActivities`."""

    @activity.defn(name=SIMULATE_AGENT)
    @abstractmethod
    async def simulate_agent(self, input: AgentInput) -> AgentResult:
        """Run the step's agent if it only reads; otherwise say what it would do (input.agent names it)."""

    @activity.defn(name=PREVIEW_APPROVAL)
    @abstractmethod
    def preview_approval(self, request: ApprovalRequest) -> ApprovalPreview:
        """Who would be asked, or which policy would approve it: the approval gate's rules, nothing recorded."""

    @activity.defn(name=RECORD_DRY_RUN)
    @abstractmethod
    def record_dry_run(self, record: DryRunRecord) -> RecordResult:
        """Write the dry run's state, status and report to its row (a local activity); newer writes win."""


def dry_run_search_attributes(incident: IncidentContext, playbook_id: str) -> TypedSearchAttributes:
    """Findable in the Temporal UI by playbook, service, severity and type, like an incident's run, but never by
    IncidentId (a dry run is no incident's, even one made from a past incident): filter on
    `WorkflowType = "PlaybookDryRunWorkflow"` to see dry runs only."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(SA_SERVICE, incident.service),
            SearchAttributePair(SA_SEVERITY, incident.severity),
            SearchAttributePair(SA_INCIDENT_TYPE, incident.incident_type),
            SearchAttributePair(SA_PLAYBOOK_ID, playbook_id),
        ]
    )
