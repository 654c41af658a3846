"""IncidentWorkflow, one per incident (workflow.py), and the plain collaborators it owns over the run's shared
state (state.py): the step runner (steps.py), the approval gate (approval_gate.py) and the projection writer
(projection_writer.py). PlaybookDryRunWorkflow (dry_run.py) runs a playbook on the same engine in simulation mode.
Imported as `from workflows.incident import IncidentWorkflow`."""

from workflows.incident.dry_run import PlaybookDryRunWorkflow
from workflows.incident.workflow import IncidentWorkflow

__all__ = ["IncidentWorkflow", "PlaybookDryRunWorkflow"]
