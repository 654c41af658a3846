"""`agent-monitor users …` and `agent-monitor tokens …`: bootstrap and manage identities from the shell.

These talk to the database directly (like `gitlab-rails` or `kubeadm`): they are how the first admin
exists before anyone can log in. Each change is audited with actor kind `cli`.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from sqlmodel import Session, col, select

from core.audit import Actor
from core.db import make_engine, resolve_database_url
from core.identity import ApiToken, User
from core.roles import ROLES
from core.secrets import random_password
from core.settings import Settings
from services.identity import (
    Conflict,
    IdentityError,
    create_token,
    create_user,
    get_user_by_name,
    revoke_token,
    unlock_user,
)

users_app = typer.Typer(no_args_is_help=True, help="Create, list and unlock users (directly in the database).")
tokens_app = typer.Typer(no_args_is_help=True, help="Create and revoke API tokens (directly in the database).")

INITIAL_PASSWORD_FILE = "initial-admin-password"  # noqa: S105 (a file name)


def cli_actor() -> Actor:
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = str(os.getuid())
    return Actor(user_id=None, name=f"cli:{login}"[:100], kind="cli")


@contextmanager
def db_session(settings: Settings) -> Iterator[Session]:
    engine = make_engine(resolve_database_url(settings))
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def _read_password(from_stdin: bool) -> str | None:
    if not from_stdin:
        return None
    return sys.stdin.readline().rstrip("\n")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def ensure_initial_admin(session: Session, data_dir: Path) -> str | None:
    """First run only: create user `admin` with a random password saved (0600) under data_dir; return it."""
    if session.exec(select(User).where(User.role == "admin")).first() is not None:
        return None
    password = random_password()
    create_user(
        session=session,
        actor=cli_actor(),
        username="admin",
        role="admin",
        password=password,
        display_name="Administrator",
    )
    session.commit()
    path = data_dir / INITIAL_PASSWORD_FILE
    path.touch(mode=0o600)
    path.write_text(password + "\n")
    return password


def _settings() -> Settings:
    from cli.common import settings_or_exit

    return settings_or_exit()


@users_app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Option(help="Login name")] = "admin",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin")] = False,
) -> None:
    """Create an admin. Without --password-stdin a random password is generated and printed once."""
    _create(username, "admin", password_stdin)


@users_app.command("create")
def create(
    username: Annotated[str, typer.Option(help="Login name")],
    role: Annotated[str, typer.Option(help="viewer | responder | approver | admin")] = "viewer",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin")] = False,
) -> None:
    """Create a user. Without --password-stdin a random password is generated and printed once."""
    if role not in ROLES:
        raise _fail(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    _create(username, role, password_stdin)


def _create(username: str, role: str, password_stdin: bool) -> None:
    import re

    from core.identity import USERNAME_PATTERN

    if not re.fullmatch(USERNAME_PATTERN, username.lower()):
        raise _fail("username: 2–63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
    password = _read_password(password_stdin)
    generated = password is None
    password = password or random_password()
    with db_session(_settings()) as session:
        try:
            user = create_user(session=session, actor=cli_actor(), username=username, role=role, password=password)
        except (Conflict, IdentityError) as err:
            raise _fail(str(err)) from None
        session.commit()
        typer.echo(f"created {role} {user.username} (id {user.id})")
    if generated:
        typer.echo(f"password: {password}")


@users_app.command("list")
def list_users() -> None:
    """List users."""
    with db_session(_settings()) as session:
        for user in session.exec(select(User).order_by(col(User.id))):
            state = "" if user.is_active else "  (inactive)"
            typer.echo(f"{user.id:>4}  {user.username:<24} {user.role}{state}")


@users_app.command("unlock")
def unlock(username: Annotated[str, typer.Argument(help="Login name")]) -> None:
    """Forget a user's failed logins, so the login limit lets them in again at once (audited)."""
    with db_session(_settings()) as session:
        user = get_user_by_name(session=session, username=username)
        if user is None:
            raise _fail(f"user {username!r} does not exist")
        name = user.username
        cleared = unlock_user(session=session, actor=cli_actor(), user=user)
        session.commit()
    typer.echo(f"unlocked {name}: {cleared} failed login{'' if cleared == 1 else 's'} forgotten")


@tokens_app.command("create")
def token_create(
    user: Annotated[str, typer.Option(help="Username the token acts as")],
    name: Annotated[str, typer.Option(help="What the token is for, e.g. 'alertmanager'")],
) -> None:
    """Create an API token and print it (the only time it is shown)."""
    with db_session(_settings()) as session:
        owner = get_user_by_name(session=session, username=user)
        if owner is None:
            raise _fail(f"user {user!r} does not exist")
        token, _ = create_token(session=session, actor=cli_actor(), user=owner, name=name[:100])
        session.commit()
    typer.echo(token)


@tokens_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument(help="Token id")]) -> None:
    """Revoke an API token by id."""
    with db_session(_settings()) as session:
        token = session.get(ApiToken, token_id)
        if token is None:
            raise _fail(f"token {token_id} does not exist")
        revoke_token(session=session, actor=cli_actor(), token=token)
        session.commit()
    typer.echo(f"revoked token {token_id}")
