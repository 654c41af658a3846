"""The fixed activities IncidentWorkflow calls, as interfaces: each method carries its activity name on the
wire, and the real classes in `activities/` subclass these and implement them under the same name. The
workflow calls `workflow.execute_activity_method(ApprovalActivityDefs.request_approval, ...)`: mypy checks
the argument and the result, and the workflow package imports no module that touches a database.

Only agents are called by a name that is data (the playbook chooses them); see `WEBHOOK_AGENT_ACTIVITY`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from temporalio import activity

from core.payloads import (
    ApprovalDecided,
    ApprovalRequest,
    ApprovalTicket,
    EscalateInput,
    NotifyApproval,
    RecordBatchInput,
    RecordResult,
)

# The activity types in every recorded history: renaming one breaks the incidents running.
REQUEST_APPROVAL = "request_approval"
RECORD_APPROVAL_DECISION = "record_approval_decision"
NOTIFY_APPROVAL = "notify_approval"
RECORD_BATCH = "record_batch"
ESCALATE_INCIDENT = "escalate_incident"


class ApprovalActivityDefs(ABC):
    """The `approvals` record: implemented by `activities.approvals.ApprovalActivities`."""

    @activity.defn(name=REQUEST_APPROVAL)
    @abstractmethod
    def request_approval(self, request: ApprovalRequest) -> ApprovalTicket:
        """Record a pending approval (or a policy's decision) and say who may decide and where to ask."""

    @activity.defn(name=RECORD_APPROVAL_DECISION)
    @abstractmethod
    def record_approval_decision(self, decided: ApprovalDecided) -> bool:
        """Record how an approval ended; False when it was already recorded."""


class NotifyActivityDefs(ABC):
    """Asking approvers on a channel: implemented by `activities.notify.NotifyActivities`."""

    @activity.defn(name=NOTIFY_APPROVAL)
    @abstractmethod
    async def notify_approval(self, notify: NotifyApproval) -> bool:
        """Ask for a decision on one channel, or tell there how it ended."""


class ProjectionActivityDefs(ABC):
    """The Postgres projection: implemented by `activities.projection.ProjectionActivities`."""

    @activity.defn(name=RECORD_BATCH)
    @abstractmethod
    def record_batch(self, input: RecordBatchInput) -> RecordResult:
        """Write a batch of workflow and step snapshots in one transaction (a local activity)."""


class EscalationActivityDefs(ABC):
    """Escalating an incident nobody has taken: implemented by `activities.escalation.EscalationActivities`."""

    @activity.defn(name=ESCALATE_INCIDENT)
    @abstractmethod
    async def escalate_incident(self, input: EscalateInput) -> bool:
        """Act on one level (notify, raise the severity, assign a team); False when a person acknowledged the
        incident or it ended, so the levels after this one are not needed."""
