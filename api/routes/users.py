"""Users, teams, API tokens and the caller's own account."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from api.auth import Admin, Principal, Viewer, actor_of, require
from api.deps import Int32Id, SessionDep
from core.audit import record_audit
from core.identity import USERNAME_PATTERN, ApiToken, Team, TeamMember, User, UserSession
from core.secrets import verify_password
from core.tables import utcnow
from services.identity import (
    Conflict,
    IdentityError,
    change_password,
    create_token,
    create_user,
    revoke_token,
    unlock_user,
    user_public,
)
from services.schemas import TeamPublic, TokenCreated, TokenPublic, UserPublic

router = APIRouter(prefix="/api", tags=["users"], dependencies=[require("viewer")])
RoleName = Literal["viewer", "responder", "approver", "admin"]


class UserCreate(BaseModel):
    username: str = Field(pattern=USERNAME_PATTERN)
    role: RoleName = "viewer"
    password: str | None = Field(default=None, max_length=1000)
    display_name: str = Field(default="", max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")


class UserUpdate(BaseModel):
    role: RoleName | None = None
    is_active: bool | None = None
    display_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    slack_user_id: str | None = Field(default=None, pattern=r"^[UW][A-Z0-9]{2,29}$", description="e.g. U012AB3CD")


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=1000)
    new_password: str = Field(max_length=1000)


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class Unlocked(BaseModel):
    user_id: int
    cleared_failures: int = Field(description="failed logins forgotten")


class TeamCreate(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"user {user_id} does not exist")
    return user


def _team(session: Session, team_id: int) -> Team:
    team = session.get(Team, team_id)
    if team is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"team {team_id} does not exist")
    return team


def _team_public(session: Session, team: Team) -> TeamPublic:
    members = session.exec(select(TeamMember.user_id).where(TeamMember.team_id == team.id)).all()
    return TeamPublic(id=team.id, name=team.name, member_ids=sorted(members))  # type: ignore[arg-type]


@router.get("/me", response_model=UserPublic)
def me(principal: Viewer, session: SessionDep) -> User:
    """The caller."""
    return _user(session, principal.user_id)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT)
def change_my_password(request: Request, body: PasswordChange, principal: Viewer, session: SessionDep) -> Response:
    """Change your password; every other session of yours ends."""
    user = _user(session, principal.user_id)
    if not verify_password(user.password_hash, body.current_password):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "current password is wrong")
    try:
        change_password(
            session=session,
            actor=actor_of(request, principal),
            user=user,
            new_password=body.new_password,
            keep_session=principal.session_id,
        )
    except IdentityError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"new_password: {err}") from err
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me/tokens", response_model=list[TokenPublic])
def my_tokens(principal: Viewer, session: SessionDep) -> list[ApiToken]:
    """Your API tokens (never their secret)."""
    return list(session.exec(select(ApiToken).where(ApiToken.user_id == principal.user_id).order_by(col(ApiToken.id))))


@router.post("/me/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_my_token(request: Request, body: TokenCreate, principal: Viewer, session: SessionDep) -> TokenCreated:
    """A new API token for you. The `token` field is shown this once; store it now."""
    user = _user(session, principal.user_id)
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    token, record = create_token(
        session=session, actor=actor_of(request, principal), user=user, name=body.name, expires_at=expires
    )
    session.commit()
    return TokenCreated(**TokenPublic.model_validate(record, from_attributes=True).model_dump(), token=token)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke(request: Request, token_id: Int32Id, principal: Viewer, session: SessionDep) -> Response:
    """Revoke a token: your own, or anyone's if you are an admin. Repeating is harmless."""
    token = session.get(ApiToken, token_id)
    if token is None or (token.user_id != principal.user_id and not principal.can("admin")):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"token {token_id} does not exist")
    revoke_token(session=session, actor=actor_of(request, principal), token=token)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/users", response_model=list[UserPublic])
def list_users(_principal: Admin, session: SessionDep) -> list[User]:
    """All users."""
    return list(session.exec(select(User).order_by(col(User.id))))


@router.post("/users", response_model=UserPublic, status_code=status.HTTP_201_CREATED)
def add_user(request: Request, body: UserCreate, principal: Admin, session: SessionDep) -> User:
    """Create a user (without a password they can only use API tokens)."""
    try:
        user = create_user(
            session=session,
            actor=actor_of(request, principal),
            username=body.username,
            role=body.role,
            password=body.password,
            display_name=body.display_name,
            email=body.email,
        )
    except Conflict as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from err
    except IdentityError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"password: {err}") from err
    session.commit()
    session.refresh(user)
    return user


@router.patch("/users/{user_id}", response_model=UserPublic)
def edit_user(request: Request, user_id: Int32Id, body: UserUpdate, principal: Admin, session: SessionDep) -> User:
    """Change a user's role, name or active flag; deactivating ends their sessions."""
    user = _user(session, user_id)
    if user.id == principal.user_id and (body.role not in (None, "admin") or body.is_active is False):
        raise HTTPException(status.HTTP_409_CONFLICT, "admins cannot demote or deactivate themselves")
    before = user_public(user)
    if body.slack_user_id is not None:
        taken = session.exec(
            select(User.username).where(User.slack_user_id == body.slack_user_id, User.id != user.id)
        ).first()
        if taken is not None:
            raise HTTPException(status.HTTP_409_CONFLICT, f"Slack user {body.slack_user_id} is linked to {taken}")
    for field, value in body.model_dump(exclude_none=True).items():
        setattr(user, field, value)
    session.add(user)
    if body.is_active is False:
        session.exec(delete(UserSession).where(col(UserSession.user_id) == user.id))
    record_audit(
        session,
        actor=actor_of(request, principal),
        action="user.update",
        target_type="user",
        target_id=user.id,
        before=before,
        after=user_public(user),
    )
    try:
        session.commit()
    except IntegrityError:  # linked to someone else at the same moment
        session.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"Slack user {body.slack_user_id} is linked to another user"
        ) from None
    session.refresh(user)
    return user


@router.post("/users/{user_id}/unlock", response_model=Unlocked)
def unlock(request: Request, user_id: Int32Id, principal: Admin, session: SessionDep) -> Unlocked:
    """Forget a user's failed logins, so the login limit lets them in again at once (audited)."""
    cleared = unlock_user(session=session, actor=actor_of(request, principal), user=_user(session, user_id))
    session.commit()
    return Unlocked(user_id=user_id, cleared_failures=cleared)


@router.get("/teams", response_model=list[TeamPublic])
def list_teams(_principal: Viewer, session: SessionDep) -> list[TeamPublic]:
    """Teams and their members."""
    return [_team_public(session, team) for team in session.exec(select(Team).order_by(col(Team.id)))]


@router.post("/teams", response_model=TeamPublic, status_code=status.HTTP_201_CREATED)
def add_team(request: Request, body: TeamCreate, principal: Admin, session: SessionDep) -> TeamPublic:
    """Create a team."""
    team = Team(name=body.name)
    session.add(team)
    try:
        session.flush()
    except IntegrityError:
        raise HTTPException(status.HTTP_409_CONFLICT, f"team {body.name!r} already exists") from None
    record_audit(
        session,
        actor=actor_of(request, principal),
        action="team.create",
        target_type="team",
        target_id=team.id,
        after={"name": team.name},
    )
    session.commit()
    return _team_public(session, team)


def _membership(
    request: Request, principal: Principal, session: Session, team_id: int, user_id: int, add: bool
) -> TeamPublic:
    team, user = _team(session, team_id), _user(session, user_id)
    exists = session.get(TeamMember, (team_id, user_id)) is not None
    if add and not exists:
        session.add(TeamMember(team_id=team_id, user_id=user_id))
    elif not add and exists:
        session.exec(
            delete(TeamMember).where(
                col(TeamMember.team_id) == team_id,
                col(TeamMember.user_id) == user_id,
            )
        )
    if add != exists:
        record_audit(
            session,
            actor=actor_of(request, principal),
            action="team.member_add" if add else "team.member_remove",
            target_type="team",
            target_id=team.id,
            after={"user_id": user.id, "username": user.username},
        )
    session.commit()
    return _team_public(session, team)


@router.put("/teams/{team_id}/members/{user_id}", response_model=TeamPublic)
def add_member(
    request: Request, team_id: Int32Id, user_id: Int32Id, principal: Admin, session: SessionDep
) -> TeamPublic:
    """Add a user to a team (idempotent)."""
    return _membership(request, principal, session, team_id, user_id, add=True)


@router.delete("/teams/{team_id}/members/{user_id}", response_model=TeamPublic)
def remove_member(
    request: Request, team_id: Int32Id, user_id: Int32Id, principal: Admin, session: SessionDep
) -> TeamPublic:
    """Remove a user from a team (idempotent)."""
    return _membership(request, principal, session, team_id, user_id, add=False)
