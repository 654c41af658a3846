"""IncidentWorkflow, one per incident (workflow.py), and the plain collaborators it owns over the run's shared
state (state.py): the step runner (steps.py), the approval gate (approval_gate.py) and the projection writer
(projection_writer.py). Imported as `from workflows.incident import IncidentWorkflow`."""

from workflows.incident.workflow import IncidentWorkflow

__all__ = ["IncidentWorkflow"]
