"""Identity tables: users, teams, sessions, API tokens, login failures; roles and their order."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Index, String
from sqlmodel import Field, Session, SQLModel, col, select

from core.tables import utcnow

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,62}$"
# NOTIFYed by triggers (migration 0023) when a credential changes: a token revoked, a session ended, a user's role or
# active flag changed. Each web process forgets the callers it remembered (api/credential_cache.py).
CREDENTIALS_CHANNEL = "am_credentials"


def _ts(nullable: bool = True) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


class Team(SQLModel, table=True):
    __tablename__ = "teams"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, sa_column_kwargs={"unique": True})
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(False))


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=63, sa_column_kwargs={"unique": True})
    display_name: str = Field(default="", max_length=200)
    email: str | None = Field(default=None, max_length=320)
    slack_user_id: str | None = Field(default=None, max_length=30, sa_column_kwargs={"unique": True})
    role: str = Field(default="viewer", max_length=20)
    password_hash: str | None = Field(default=None, max_length=200)  # None: token/SSO only
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(False))
    password_changed_at: datetime | None = Field(default=None, sa_column=_ts())
    last_login_at: datetime | None = Field(default=None, sa_column=_ts())


class TeamMember(SQLModel, table=True):
    __tablename__ = "team_members"

    team_id: int = Field(sa_column=Column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True))
    user_id: int = Field(sa_column=Column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True))


class UserSession(SQLModel, table=True):
    """A browser login. The cookie carries a random secret; only its SHA-256 is stored."""

    __tablename__ = "user_sessions"
    __table_args__ = (Index("ix_user_sessions_user", "user_id"),)

    id: str = Field(primary_key=True, max_length=64)  # sha256 hex of the cookie value
    user_id: int = Field(sa_column=Column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(False))
    expires_at: datetime = Field(sa_column=_ts(False))
    last_seen_at: datetime = Field(default_factory=utcnow, sa_column=_ts(False))
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=300)


class ApiToken(SQLModel, table=True):
    """A personal API token: shown once, stored as SHA-256, revocable."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=Column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True))
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=20)  # shown in lists so people can tell tokens apart
    token_hash: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(False))
    last_used_at: datetime | None = Field(default=None, sa_column=_ts())
    expires_at: datetime | None = Field(default=None, sa_column=_ts())
    revoked_at: datetime | None = Field(default=None, sa_column=_ts())


class LoginFailure(SQLModel, table=True):
    """Failed logins, counted per username and per IP for the rate limit (shared by all web processes)."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_username_at", "username", "at"),
        Index("ix_login_failures_ip_at", "ip", "at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    username: str = Field(sa_column=Column(String(100), nullable=False))
    ip: str = Field(sa_column=Column(String(64), nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_column=_ts(False))


def team_names(session: Session, user_id: int) -> list[str]:
    """The names of the teams the user belongs to."""
    rows = session.exec(
        select(Team.name).join(TeamMember, col(TeamMember.team_id) == col(Team.id)).where(TeamMember.user_id == user_id)
    )
    return list(rows)
