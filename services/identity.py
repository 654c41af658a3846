"""Users, teams, sessions and API tokens: the service functions behind login, the CLI and the admin API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Row,
    String,
    any_,
    bindparam,
    cast,
    delete,
    func,
    null,
    or_,
    union_all,
    update,
)
from sqlalchemy import select as core_select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core import errors
from core.audit import Actor, AuditEvent, record_audit
from core.errors import Invalid
from core.identity import ApiToken, LoginFailure, User, UserSession
from core.secrets import (
    hash_password,
    new_api_token,
    new_secret,
    password_problem,
    sha256_hex,
    verify_password,
)
from core.tables import utcnow

TOUCH_EVERY = timedelta(minutes=1)  # last_seen/last_used are written at most this often
# Failed logins count for FAILURE_WINDOW (see claim_attempt).
FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_USER_AND_IP = 10  # one address guessing at one account
MAX_FAILURES_PER_USER = 30  # one account, from addresses it has not logged in from within FAMILIAR_FOR
MAX_FAILURES_PER_IP = 30  # one address, whichever accounts
FAMILIAR_FOR = timedelta(days=30)
_LOCK_USERNAME, _LOCK_IP = 0x616D6C75, 0x616D6C69  # pg_advisory_xact_lock namespaces ("amlu", "amli")


class IdentityError(Invalid):
    """A refused identity operation; the message is for the user."""


class Conflict(errors.Conflict, IdentityError):
    pass


class RateLimited(errors.RateLimited, IdentityError):
    pass


def user_public(user: User) -> dict[str, Any]:
    """What the audit log and the API show of a user (never the hash)."""
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "email": user.email,
        "role": user.role,
        "is_active": user.is_active,
    }


def create_user(
    *,
    session: Session,
    actor: Actor,
    username: str,
    role: str,
    password: str | None,
    display_name: str = "",
    email: str | None = None,
) -> User:
    """Create a user (audited); a taken username raises Conflict."""
    if password is not None and (problem := password_problem(password)):
        raise IdentityError(problem)
    user = User(
        username=username.lower(),
        role=role,
        display_name=display_name,
        email=email,
        password_hash=hash_password(password) if password else None,
        password_changed_at=utcnow() if password else None,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"user {username!r} already exists") from None
    record_audit(
        session,
        actor=actor,
        action="user.create",
        target_type="user",
        target_id=user.id,
        after=user_public(user),
    )
    return user


def get_user_by_name(*, session: Session, username: str) -> User | None:
    return session.exec(select(User).where(User.username == username.lower())).first()


def _familiar(session: Session, *, username: str, ip: str) -> bool:
    """Whether the user logged in from this address within FAMILIAR_FOR (the audit log's session.login rows)."""
    found = session.exec(
        select(AuditEvent.id)
        .join(User, col(User.id) == col(AuditEvent.actor_user_id))
        .where(
            col(User.username) == username,
            col(AuditEvent.action) == "session.login",
            col(AuditEvent.ip) == ip,
            col(AuditEvent.at) > utcnow() - FAMILIAR_FOR,
        )
        .limit(1)
    ).first()
    return found is not None


def claim_attempt(*, session: Session, username: str, ip: str) -> None:
    """Count a login attempt against the limits and record it as a failure before any password is checked
    (committed here; a success deletes it again), or raise RateLimited.

    Atomic: the count and the record happen under transaction-scoped advisory locks on the username and then
    the address (always in that order, so two attempts never wait on each other in a cycle), so N parallel
    attempts check at most the limit. Budgets per FAILURE_WINDOW: MAX_FAILURES_PER_USER_AND_IP for one address
    at one account; MAX_FAILURES_PER_IP for one address; MAX_FAILURES_PER_USER for one account in all, except
    from an address it logged in from lately: a guesser elsewhere cannot lock the owner out of their usual one.
    """
    name, ip = username.lower()[:100], ip[:64]
    session.exec(select(func.pg_advisory_xact_lock(_LOCK_USERNAME, func.hashtext(name)))).one()
    session.exec(select(func.pg_advisory_xact_lock(_LOCK_IP, func.hashtext(ip)))).one()
    same_user, same_ip = col(LoginFailure.username) == name, col(LoginFailure.ip) == ip
    by_pair, by_user, by_ip = session.exec(
        select(
            func.count().filter(same_user, same_ip),
            func.count().filter(same_user),
            func.count().filter(same_ip),
        ).where(col(LoginFailure.at) > utcnow() - FAILURE_WINDOW, or_(same_user, same_ip))
    ).one()
    if (
        by_pair >= MAX_FAILURES_PER_USER_AND_IP
        or by_ip >= MAX_FAILURES_PER_IP
        or (by_user >= MAX_FAILURES_PER_USER and not _familiar(session, username=name, ip=ip))
    ):
        session.rollback()  # releases the locks
        raise RateLimited(
            "too many failed logins; try again in 15 minutes", retry_after=int(FAILURE_WINDOW.total_seconds())
        )
    session.add(LoginFailure(username=name, ip=ip))
    session.commit()  # releases the locks: the next attempt counts this one


def authenticate(*, session: Session, username: str, password: str, ip: str, user_agent: str | None) -> User:
    """Check a password login (rate limited, audited both ways); return the user or raise IdentityError."""
    claim_attempt(session=session, username=username, ip=ip)
    user = get_user_by_name(session=session, username=username)
    ok = verify_password(user.password_hash if user else None, password)
    if not ok or user is None or not user.is_active:
        record_audit(
            session,
            actor=Actor(None, username.lower()[:100], "session", ip, user_agent),
            action="session.login_failed",
            target_type="user",
            target_id=user.id if user else None,
        )
        session.commit()
        raise IdentityError("wrong username or password")
    # This address's failures at this account (the attempt just claimed among them); other addresses' stay.
    session.exec(
        delete(LoginFailure).where(col(LoginFailure.username) == user.username, col(LoginFailure.ip) == ip[:64])
    )
    user.last_login_at = utcnow()
    return user


def unlock_user(*, session: Session, actor: Actor, user: User) -> int:
    """Forget the user's failed logins from every address, so the limit lets them try at once (audited);
    return how many were forgotten."""
    cleared = session.exec(delete(LoginFailure).where(col(LoginFailure.username) == user.username)).rowcount
    record_audit(
        session,
        actor=actor,
        action="user.unlock",
        target_type="user",
        target_id=user.id,
        after={"username": user.username, "cleared_failures": cleared},
    )
    return cleared


@dataclass
class NewSession:
    cookie_value: str
    record: UserSession


def create_session(
    *, session: Session, user: User, ttl: timedelta, ip: str | None, user_agent: str | None
) -> NewSession:
    secret = new_secret()
    record = UserSession(
        id=sha256_hex(secret),
        user_id=user.id,  # type: ignore[arg-type]
        csrf_token=new_secret(),
        expires_at=utcnow() + ttl,
        ip=ip,
        user_agent=(user_agent or "")[:300] or None,
    )
    session.add(record)
    record_audit(
        session,
        actor=Actor(user.id, user.username, "session", ip, user_agent),
        action="session.login",
        target_type="user",
        target_id=user.id,
    )
    return NewSession(secret, record)


def _caller_lookup(live: Any, key: Any, table: Any, stamp: Any) -> Any:
    """`live` (the credential's row if it and its user are live, with `stale`: its use stamp is older than
    :stale_before) plus an UPDATE of that stamp to :now when stale: one autocommit statement, built once."""
    live = live.cte("live")
    touch = update(table).where(key.in_(core_select(live.c.key).where(live.c.stale))).values({stamp: bindparam("now")})
    return core_select(live).add_cte(touch.cte("touch"))


_SESSION_CALLER = _caller_lookup(
    core_select(
        col(UserSession.id).label("key"),
        col(UserSession.csrf_token),
        col(UserSession.expires_at),
        col(User.id).label("user_id"),
        col(User.username),
        col(User.role),
        (col(UserSession.last_seen_at) < bindparam("stale_before")).label("stale"),
    )
    .join(User, col(User.id) == col(UserSession.user_id))
    .where(
        col(UserSession.id) == bindparam("hash"), col(UserSession.expires_at) > bindparam("now"), col(User.is_active)
    ),
    col(UserSession.id),
    UserSession,
    "last_seen_at",
)
_TOKEN_CALLER = _caller_lookup(
    core_select(
        col(ApiToken.id).label("key"),
        col(ApiToken.expires_at),
        col(User.id).label("user_id"),
        col(User.username),
        col(User.role),
        or_(col(ApiToken.last_used_at).is_(None), col(ApiToken.last_used_at) < bindparam("stale_before")).label(
            "stale"
        ),
    )
    .join(User, col(User.id) == col(ApiToken.user_id))
    .where(
        col(ApiToken.token_hash) == bindparam("hash"),
        col(ApiToken.revoked_at).is_(None),
        or_(col(ApiToken.expires_at).is_(None), col(ApiToken.expires_at) > bindparam("now")),
        col(User.is_active),
    ),
    col(ApiToken.id),
    ApiToken,
    "last_used_at",
)


def _live_caller(db: Connection, statement: Any, secret: str) -> Row[Any] | None:
    now = utcnow()
    params = {"hash": sha256_hex(secret), "now": now, "stale_before": now - TOUCH_EVERY}
    return db.execution_options(isolation_level="AUTOCOMMIT").execute(statement, params).first()


def session_user(*, db: Connection, cookie_value: str) -> Row[Any] | None:
    """A live session whose user is active (`user_id`, `username`, `role`, the session's id as `key`, its
    `csrf_token`), or None; touches last_seen_at (at most every TOUCH_EVERY). One round trip: every page and
    cookie-authenticated call asks."""
    return _live_caller(db, _SESSION_CALLER, cookie_value)


def end_session(*, session: Session, session_id: str) -> None:
    session.exec(delete(UserSession).where(col(UserSession.id) == session_id))


def change_password(*, session: Session, actor: Actor, user: User, new_password: str, keep_session: str | None) -> None:
    """Set a new password and end every other session of the user (audited)."""
    if problem := password_problem(new_password):
        raise IdentityError(problem)
    user.password_hash = hash_password(new_password)
    user.password_changed_at = utcnow()
    session.add(user)
    query = delete(UserSession).where(col(UserSession.user_id) == user.id)
    if keep_session:
        query = query.where(col(UserSession.id) != keep_session)
    session.exec(query)
    record_audit(session, actor=actor, action="user.password_change", target_type="user", target_id=user.id)


def create_token(
    *, session: Session, actor: Actor, user: User, name: str, expires_at: datetime | None = None
) -> tuple[str, ApiToken]:
    """A new API token for user; the plain token is returned here and never again."""
    token, prefix, digest = new_api_token()
    record = ApiToken(user_id=user.id, name=name, prefix=prefix, token_hash=digest, expires_at=expires_at)  # type: ignore[arg-type]
    session.add(record)
    session.flush()
    record_audit(
        session,
        actor=actor,
        action="token.create",
        target_type="api_token",
        target_id=record.id,
        after={"user_id": user.id, "name": name, "prefix": prefix},
    )
    return token, record


def token_user(*, db: Connection, token: str) -> Row[Any] | None:
    """A live (not revoked, not expired) token whose user is active (`user_id`, `username`, `role`), or None;
    touches last_used_at (at most every TOUCH_EVERY). One round trip: every API call asks."""
    return _live_caller(db, _TOKEN_CALLER, token)


def revoke_token(*, session: Session, actor: Actor, token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.add(token)
        record_audit(
            session,
            actor=actor,
            action="token.revoke",
            target_type="api_token",
            target_id=token.id,
            before={"name": token.name, "prefix": token.prefix},
        )


def _live(credential: Any, user_id: Any, *conditions: Any) -> Any:
    return core_select(*credential).join(User, col(User.id) == user_id).where(col(User.is_active), *conditions)


# Which of these tokens and sessions are still live (their user active): one statement for all of a hub's streams.
LIVE_CREDENTIALS = union_all(
    _live(
        (col(ApiToken.id).label("token_id"), cast(null(), String).label("session_id")),
        col(ApiToken.user_id),
        col(ApiToken.id) == any_(bindparam("tokens", type_=ARRAY(Integer))),
        col(ApiToken.revoked_at).is_(None),
        or_(col(ApiToken.expires_at).is_(None), col(ApiToken.expires_at) > bindparam("now")),
    ),
    _live(
        (cast(null(), Integer), col(UserSession.id)),
        col(UserSession.user_id),
        col(UserSession.id) == any_(bindparam("sessions", type_=ARRAY(String))),
        col(UserSession.expires_at) > bindparam("now"),
    ),
)


def live_credentials(*, db: Connection, token_ids: list[int], session_ids: list[str]) -> set[int | str]:
    """Which of these API tokens (by id) and sessions still hold: unrevoked and unexpired, their user active."""
    rows = db.execute(LIVE_CREDENTIALS, {"tokens": token_ids, "sessions": session_ids, "now": utcnow()}).all()
    return {row.token_id if row.token_id is not None else row.session_id for row in rows}
