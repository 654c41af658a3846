"""Temporal payload types: one input and one result dataclass per workflow, activity, query.

Payloads stay small: ids and bounded summaries; full records live in Postgres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes


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
    playbook_id: str = "default"
    # How often steps marked `recheck` (verify) check before a negative result counts, and the pause between.
    recheck_count: int = 3
    recheck_interval_seconds: float = 10.0


@dataclass
class AgentInput:
    incident: IncidentContext
    workflow_id: str
    step_id: str
    # Output of the step(s) this one depends on; None for the first step.
    previous_agent_output: dict[str, Any] | None = None


@dataclass
class AgentResult:
    """What an agent returns. `ok` False means the agent ran and its finding is negative (e.g. still down)."""

    ok: bool
    summary: str
    data: dict[str, Any] = field(default_factory=dict)


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


@dataclass
class RecordWorkflowInput:
    state: WorkflowState
    seq: int


@dataclass
class RecordStepInput:
    workflow_id: str
    step: StepState
    seq: int
    input: dict[str, Any] | None = None


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
