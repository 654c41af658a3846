"""IncidentWorkflow, one per incident (workflow.py), and the collaborators it owns: the projection writer
(projection_writer.py). Imported as `from workflows.incident import IncidentWorkflow`."""

from workflows.incident.workflow import IncidentWorkflow

__all__ = ["IncidentWorkflow"]
