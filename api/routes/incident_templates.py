"""Incident templates: per incident type, the default severity, description, playbook, reopen action and
escalation policy."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, status
from sqlmodel import col, select

from api.auth import Admin, actor_of, require
from api.deps import SessionDep, SettingsDep
from core.audit import record_audit
from core.collaboration import IncidentTemplate, IncidentTemplateBody
from services.collaboration import save_template
from services.playbooks import PlaybookNotFound, load_playbook

router = APIRouter(prefix="/api/incident-templates", tags=["incident templates"], dependencies=[require("viewer")])
IncidentType = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]


class TemplatePublic(IncidentTemplateBody):
    incident_type: str
    updated_by: str


@router.get("", response_model=list[TemplatePublic])
def list_templates(session: SessionDep) -> list[IncidentTemplate]:
    return list(session.exec(select(IncidentTemplate).order_by(col(IncidentTemplate.incident_type))))


@router.get("/{incident_type}", response_model=TemplatePublic)
def get_template(incident_type: IncidentType, session: SessionDep) -> IncidentTemplate:
    template = session.get(IncidentTemplate, incident_type)
    if template is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"incident type {incident_type} has no template")
    return template


@router.put("/{incident_type}", response_model=TemplatePublic)
def put_template(
    request: Request,
    incident_type: IncidentType,
    body: IncidentTemplateBody,
    principal: Admin,
    session: SessionDep,
    settings: SettingsDep,
) -> IncidentTemplate:
    """Create or replace the template new incidents of this type start from (admin)."""
    if body.playbook_id:
        try:
            load_playbook(session=session, settings=settings, playbook_id=body.playbook_id, version=None)
        except PlaybookNotFound as err:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"playbook_id: {err}") from err
    template = IncidentTemplate.model_validate(body.model_dump(mode="json"), update={"incident_type": incident_type})
    return save_template(session=session, template=template, actor=actor_of(request, principal))


@router.delete("/{incident_type}", status_code=status.HTTP_204_NO_CONTENT)
def delete_template(request: Request, incident_type: IncidentType, principal: Admin, session: SessionDep) -> None:
    template = session.get(IncidentTemplate, incident_type)
    if template is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"incident type {incident_type} has no template")
    record_audit(
        session,
        actor=actor_of(request, principal),
        action="incident_template.delete",
        target_type="incident_template",
        target_id=incident_type,
        before=template.model_dump(mode="json", exclude={"updated_at"}),
    )
    session.delete(template)
    session.commit()
