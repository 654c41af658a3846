"""Playbooks: store new versions, read them, their history, diffs, restores and forks, and who shares them.

Seeing a playbook and changing it follow its sharing (core/playbook_access.py): a caller who may not see one is
answered 404, as if it did not exist; one who sees it but may not change it, 403."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session

from api.auth import Responder, Viewer, actor_of, require
from api.deps import SessionDep, SettingsDep
from core.playbook import Playbook, PlaybookError, new_playbook
from core.tables import PlaybookVersion
from services.playbook_sharing import check_view, sharing_public
from services.playbooks import (
    MESSAGE_MAX,
    diff_versions,
    fork_playbook,
    list_versions,
    load_playbook,
    restore_version,
    save_playbook,
    set_sharing,
    sharing_of,
    visible_playbooks,
)
from services.playbooks import version_row as stored_version

router = APIRouter(prefix="/api/playbooks", tags=["playbooks"], dependencies=[require("viewer")])
ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,99}$"
PlaybookId = Annotated[str, Path(pattern=ID_PATTERN)]
Version = Annotated[int, Field(ge=1, le=1_000_000)]
# What GET adds to a definition; a definition sent back as it was read is accepted (these are ignored).
READ_ONLY = ("forked_from", "saved", "sharing")


class VersionPublic(BaseModel):
    version: int
    name: str
    author: str | None
    created_at: datetime
    message: str | None
    forked_from: dict[str, Any] | None


class DiffPublic(BaseModel):
    playbook_id: str
    a: int
    b: int
    format: Literal["yaml"] = "yaml"
    lines: list[str]  # unified diff of the canonical YAML (sorted keys, version left out); empty: equal


class RestoreBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Version
    message: str | None = Field(default=None, max_length=MESSAGE_MAX)


class ForkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    version: Version | None = None  # the latest when left out
    owner_team: str | None = Field(default=None, max_length=100)  # else the source's
    message: str | None = Field(default=None, max_length=MESSAGE_MAX)


class SharingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner_team: str | None = Field(max_length=100)
    visibility: Literal["team", "everyone"]


class SharingPublic(BaseModel):
    owner_team: str | None
    visibility: Literal["team", "everyone"]
    shared: bool  # false: no sharing set (everyone sees it, only admins change it)


def _first_problem(err: ValidationError) -> str:
    problems = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def _meta(session: Session, row: PlaybookVersion | None) -> dict[str, Any]:
    if row is None:  # the built-in default, never stored
        return {"forked_from": None, "saved": None, "sharing": None}
    return {
        "forked_from": _forked_from(row),
        "saved": {"by": row.created_by, "at": row.created_at.isoformat(), "message": row.message},
        "sharing": sharing_public(session=session, sharing=sharing_of(session=session, playbook_id=row.playbook_id)),
    }


def _forked_from(row: PlaybookVersion) -> dict[str, Any] | None:
    if row.forked_from_id is None:
        return None
    return {"id": row.forked_from_id, "version": row.forked_from_version}


def _with_meta(session: Session, playbook: Playbook) -> dict[str, Any]:
    row = stored_version(session=session, playbook_id=playbook.id, version=playbook.version)
    return playbook.model_dump(mode="json") | _meta(session, row)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_playbook(
    request: Request,
    principal: Responder,
    session: SessionDep,
    body: Annotated[
        dict[str, Any],
        Body(
            description="A playbook (core.playbook.Playbook); its version is assigned. Also `message` (what this "
            "version changes, at most 500 characters) and, for a new playbook, `owner_team` (a responder must name "
            "one of their teams; admins may leave it out)"
        ),
    ],
    owner_team: Annotated[str | None, Query(max_length=100, description="as the body's owner_team")] = None,
) -> dict[str, Any]:
    """Store a playbook as its next version: a new id needs an admin, or a responder naming one of their teams as
    owner; an existing one needs edit rights (admins; responders of its owner team). Invalid ones get 422 naming
    the step; an id taken by a playbook the caller may not see, 409."""
    body = {key: value for key, value in body.items() if key not in READ_ONLY}
    message, team = body.pop("message", None), body.pop("owner_team", None) or owner_team
    if not isinstance(message, str | None) or not isinstance(team, str | None):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "message and owner_team must be strings")
    try:
        playbook = new_playbook(body)
    except ValidationError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"playbook: {_first_problem(err)}") from None
    try:
        stored = save_playbook(
            session=session,
            actor=actor_of(request, principal),
            playbook=playbook,
            message=message,
            principal=principal,
            owner_team=team,
        )
    except PlaybookError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"playbook: {err}") from None
    session.commit()
    return _with_meta(session, stored)


@router.get("")
def list_playbooks(
    principal: Viewer,
    session: SessionDep,
    incident_type: Annotated[str | None, Query(max_length=100)] = None,
    team: Annotated[str | None, Query(max_length=100, description="the owner team's name")] = None,
    owner: Annotated[str | None, Query(max_length=100, description="who stored version 1")] = None,
    service: Annotated[
        str | None,
        Query(max_length=100, description="its default_playbook, or a playbook for an incident type it opens"),
    ] = None,
) -> list[dict[str, Any]]:
    """The latest version of every stored playbook the caller may see, filtered."""
    rows = visible_playbooks(
        session=session, principal=principal, incident_type=incident_type, team=team, owner=owner, service=service
    )
    return [row.definition | _meta(session, row) for row in rows]


@router.get("/{playbook_id}")
def get_playbook(
    playbook_id: PlaybookId,
    principal: Viewer,
    session: SessionDep,
    settings: SettingsDep,
    version: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
) -> dict[str, Any]:
    """One playbook: the latest version, or `version`, with forked_from, saved (by, at, message) and sharing.
    `default` is built in until one is stored."""
    check_view(session=session, principal=principal, playbook_id=playbook_id)
    playbook = load_playbook(session=session, settings=settings, playbook_id=playbook_id, version=version)
    if playbook.version == 0:
        return playbook.model_dump(mode="json") | _meta(session, None)
    return _with_meta(session, playbook)


@router.get("/{playbook_id}/versions", response_model=list[VersionPublic])
def versions(playbook_id: PlaybookId, principal: Viewer, session: SessionDep) -> list[VersionPublic]:
    """Every version, oldest first: its number, author, time, message and what it was forked from."""
    return [
        VersionPublic(
            version=row.version,
            name=row.name,
            author=row.created_by,
            created_at=row.created_at,
            message=row.message,
            forked_from=_forked_from(row),
        )
        for row in list_versions(session=session, playbook_id=playbook_id, principal=principal)
    ]


@router.get("/{playbook_id}/diff", response_model=DiffPublic)
def diff(
    playbook_id: PlaybookId,
    principal: Viewer,
    session: SessionDep,
    a: Annotated[int, Query(ge=1, le=1_000_000, description="the older version")],
    b: Annotated[int, Query(ge=1, le=1_000_000, description="the newer version")],
) -> DiffPublic:
    """Unified diff lines from version a to version b of the canonical YAML of their definitions."""
    lines = diff_versions(session=session, playbook_id=playbook_id, a=a, b=b, principal=principal)
    return DiffPublic(playbook_id=playbook_id, a=a, b=b, lines=lines)


@router.post("/{playbook_id}/restore", status_code=status.HTTP_201_CREATED)
def restore(
    request: Request, playbook_id: PlaybookId, body: RestoreBody, principal: Responder, session: SessionDep
) -> dict[str, Any]:
    """A new version equal to `version` (message "restored from vN" unless given); needs edit rights."""
    restored = restore_version(
        session=session,
        actor=actor_of(request, principal),
        playbook_id=playbook_id,
        version=body.version,
        principal=principal,
        message=body.message,
    )
    session.commit()
    return _with_meta(session, restored)


@router.post("/{playbook_id}/fork", status_code=status.HTTP_201_CREATED)
def fork(
    request: Request, playbook_id: PlaybookId, body: ForkBody, principal: Responder, session: SessionDep
) -> dict[str, Any]:
    """Copy a version (the latest when left out) under a new id as its version 1, with forked_from set. A taken
    id is 409. The fork keeps the source's visibility; its owner team is `owner_team`, else the source's (a
    responder must be a member)."""
    forked = fork_playbook(
        session=session,
        actor=actor_of(request, principal),
        source_id=playbook_id,
        version=body.version,
        new_id=body.id,
        new_name=body.name,
        principal=principal,
        owner_team=body.owner_team,
        message=body.message,
    )
    session.commit()
    return _with_meta(session, forked)


@router.get("/{playbook_id}/sharing", response_model=SharingPublic)
def get_sharing(playbook_id: PlaybookId, principal: Viewer, session: SessionDep) -> SharingPublic:
    """Its owner team and visibility."""
    list_versions(session=session, playbook_id=playbook_id, principal=principal)  # 404 unless stored and visible
    return _sharing(session, playbook_id)


@router.put("/{playbook_id}/sharing", response_model=SharingPublic)
def put_sharing(
    request: Request, playbook_id: PlaybookId, body: SharingBody, principal: Responder, session: SessionDep
) -> SharingPublic:
    """Set its owner team and visibility (`team`: only the owner team's members and admins see it); needs edit
    rights, and a non-admin may only name one of their own teams."""
    set_sharing(
        session=session,
        actor=actor_of(request, principal),
        principal=principal,
        playbook_id=playbook_id,
        owner_team=body.owner_team,
        visibility=body.visibility,
    )
    session.commit()
    return _sharing(session, playbook_id)


def _sharing(session: Session, playbook_id: str) -> SharingPublic:
    shown = sharing_public(session=session, sharing=sharing_of(session=session, playbook_id=playbook_id))
    if shown is None:
        return SharingPublic(owner_team=None, visibility="everyone", shared=False)
    return SharingPublic(owner_team=shown["owner_team"], visibility=shown["visibility"], shared=True)  # type: ignore[arg-type]
