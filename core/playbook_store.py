"""Reading stored playbook versions: the one an incident runs (explicit, else its type's latest, else the built-in
default) and a pinned version. Storing them (validated against the installed agents) is services/playbooks.py.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from core.errors import NotFound
from core.playbook import Playbook, default_playbook
from core.settings import Settings
from core.tables import Incident, PlaybookDryRun, PlaybookVersion, WorkflowRun

BUILTIN_VERSION = 0  # the built-in default playbook, used until someone stores one for the type


class PlaybookNotFound(NotFound):
    pass


def builtin_default(settings: Settings) -> Playbook:
    return default_playbook(
        verify_checks=settings.verify_checks,
        verify_interval_seconds=settings.verify_interval_seconds,
        verify_passes=settings.verify_passes,
    ).model_copy(update={"version": BUILTIN_VERSION})


def load_playbook(*, session: Session, settings: Settings, playbook_id: str, version: int | None = None) -> Playbook:
    """A stored version (the latest when version is None), or the built-in default."""
    query = select(PlaybookVersion).where(PlaybookVersion.playbook_id == playbook_id)
    if version is not None:
        query = query.where(PlaybookVersion.version == version)
    row = session.exec(query.order_by(col(PlaybookVersion.version).desc())).first()
    if row is not None:
        return Playbook.model_validate(row.definition)
    if playbook_id == "default" and version in (None, BUILTIN_VERSION):
        return builtin_default(settings)
    raise PlaybookNotFound(f"playbook {playbook_id}" + (f" version {version}" if version else "") + " does not exist")


def choose_playbook(*, session: Session, settings: Settings, incident_type: str, playbook_id: str | None) -> Playbook:
    """An explicit playbook, else the latest one for the incident type, else the built-in default."""
    if playbook_id:
        return load_playbook(session=session, settings=settings, playbook_id=playbook_id)
    row = session.exec(
        select(PlaybookVersion)
        .where(PlaybookVersion.incident_type == incident_type)
        .order_by(col(PlaybookVersion.created_at).desc(), col(PlaybookVersion.version).desc())
    ).first()
    if row is not None:
        return Playbook.model_validate(row.definition)
    return builtin_default(settings)


def pinned_approvers(
    *, session: Session, workflow_id: str, incident_id: int, step_id: str
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The step's own `approvers` and its playbook's, as the version the run is pinned to holds them (None: not
    named, or a step added at run time, or a version not stored: the built-in default). For approvers_for."""
    pinned: tuple[str, int] | None = None
    dry_run = session.exec(select(PlaybookDryRun).where(PlaybookDryRun.workflow_id == workflow_id)).first()
    if dry_run is not None:  # a dry run made from a past incident runs its own version, not the incident's
        pinned = dry_run.playbook_id, dry_run.playbook_version
    elif (run := session.get(WorkflowRun, workflow_id)) is not None:
        pinned = run.playbook_id, run.playbook_version
    elif (incident := session.get(Incident, incident_id)) is not None:
        pinned = incident.playbook_id, incident.playbook_version
    if pinned is None:
        return None, None
    row = session.exec(
        select(PlaybookVersion).where(PlaybookVersion.playbook_id == pinned[0], PlaybookVersion.version == pinned[1])
    ).first()
    if row is None:
        return None, None
    steps = [s for s in row.definition.get("steps", []) if isinstance(s, dict) and s.get("id") == step_id]
    return (steps[0].get("approvers") if steps else None), row.definition.get("approvers")
