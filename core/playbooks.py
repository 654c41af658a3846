"""The default playbook. The playbook issue turns this into a validated, versioned DAG model."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChainStep:
    step_id: str
    agent: str
    # A negative finding ("still down") fails the step and the workflow, not just informs the next step.
    fail_on_negative: bool = False
    # Run again after a pause while the finding is negative (IncidentWorkflowInput.recheck_*).
    recheck: bool = False


DEFAULT_PLAYBOOK_ID = "default"
DEFAULT_CHAIN: tuple[ChainStep, ...] = (
    ChainStep("monitor", "monitor"),
    ChainStep("investigate", "investigate"),
    ChainStep("remediate", "remediate"),
    ChainStep("verify", "verify", fail_on_negative=True, recheck=True),
)
