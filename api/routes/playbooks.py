"""Playbooks: store new versions (admin), read them (everyone)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, status
from pydantic import ValidationError

from api.auth import Admin, actor_of, require
from api.deps import SessionDep, SettingsDep
from core.playbook import Playbook, PlaybookError
from services.playbooks import latest_playbooks, load_playbook, save_playbook

router = APIRouter(prefix="/api/playbooks", tags=["playbooks"], dependencies=[require("viewer")])
PlaybookId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")]


def _first_problem(err: ValidationError) -> str:
    problems = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_playbook(
    request: Request,
    principal: Admin,
    session: SessionDep,
    body: Annotated[dict[str, Any], Body(description="A playbook (core.playbook.Playbook); its version is assigned")],
) -> dict[str, Any]:
    """Store a playbook as its next version. Invalid ones get 422 naming the step."""
    try:
        playbook = Playbook.model_validate(body)
    except ValidationError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"playbook: {_first_problem(err)}") from None
    try:
        stored = save_playbook(session=session, actor=actor_of(request, principal), playbook=playbook)
    except PlaybookError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"playbook: {err}") from None
    session.commit()
    return stored.model_dump(mode="json")


@router.get("")
def list_playbooks(session: SessionDep) -> list[dict[str, Any]]:
    """The latest version of every stored playbook."""
    return [row.definition for row in latest_playbooks(session=session)]


@router.get("/{playbook_id}")
def get_playbook(
    playbook_id: PlaybookId,
    session: SessionDep,
    settings: SettingsDep,
    version: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
) -> dict[str, Any]:
    """One playbook: the latest version, or `version`. `default` is built in until one is stored."""
    return load_playbook(session=session, settings=settings, playbook_id=playbook_id, version=version).model_dump(
        mode="json"
    )
