"""Who is calling: API token or session cookie; role guards; CSRF for cookie-authenticated writes.

Every route declares either a guard (`require(role)`) or `public(reason)`; tests/api/test_route_guards.py
walks the app and fails on any route with neither.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request, status

from core.audit import Actor
from core.db import on_pool
from core.metrics import CALLER_LOOKUPS
from core.roles import ROLE_RANK
from core.secrets import same, sha256_hex
from services.identity import session_user, token_user

if TYPE_CHECKING:
    from api.credential_cache import CredentialCache

REMEMBERED, FROM_DATABASE = CALLER_LOOKUPS.labels("remembered"), CALLER_LOOKUPS.labels("database")
SESSION_COOKIE = "am_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
FORM_MAX_FIELDS = 20_000
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: str
    via: str  # "session" | "token"
    session_id: str | None = None
    csrf_token: str | None = None
    token_id: int | None = None  # the API token's id (via "token"): open streams re-check it

    def can(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


class LoginRequired(Exception):
    """No valid credentials: 401 for the API, a redirect to /login for pages."""


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def actor_of(request: Request, principal: Principal) -> Actor:
    return Actor(
        user_id=principal.user_id,
        name=principal.username,
        kind=principal.via,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )


def _credential(request: Request) -> tuple[str, str] | None:
    """("token" | "session", the secret) the request carries; a bearer token wins over a cookie."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return "token", header[7:].strip()
    cookie = request.cookies.get(SESSION_COOKIE)
    return ("session", cookie) if cookie else None


def _cache_key(via: str, secret: str) -> str:
    return f"{via[0]}:{sha256_hex(secret)}"


def _resolve(request: Request, via: str, secret: str) -> Principal | None:
    cache: CredentialCache | None = getattr(request.app.state, "credentials", None)
    generation = cache.generation if cache is not None else 0  # before the read: a change meanwhile voids it
    with request.app.state.engine.connect() as db:
        found = token_user(db=db, token=secret) if via == "token" else session_user(db=db, cookie_value=secret)
    if found is None:
        return None
    if via == "token":
        principal = Principal(found.user_id, found.username, found.role, "token", token_id=found.key)
    else:
        principal = Principal(found.user_id, found.username, found.role, "session", found.key, found.csrf_token)
    if cache is not None:
        cache.put(_cache_key(via, secret), principal, found.expires_at, generation)
    return principal


def _lookup(request: Request, via: str, secret: str) -> tuple[Principal | None, bool]:
    """The caller once its turn came: remembered meanwhile (a request before it in line looked it up), or from
    Postgres. With whether Postgres was asked."""
    cache: CredentialCache | None = getattr(request.app.state, "credentials", None)
    principal = cache.get(_cache_key(via, secret)) if cache is not None else None
    if principal is not None:
        return principal, False
    return _resolve(request, via, secret), True


async def current_principal(request: Request) -> Principal | None:
    """The caller, resolved once per request: from this process's cache of callers while Postgres says none of
    them changed (api/credential_cache.py), else from Postgres. Kept as `request.state.principal`."""
    # The request's state dict itself: `hasattr(request.state, ...)` raises and catches an AttributeError for
    # every request, a measurable part of a short one.
    state = request.scope.setdefault("state", {})
    if "principal" not in state:
        credential = _credential(request)
        principal = None
        if credential is not None:
            cache: CredentialCache | None = getattr(request.app.state, "credentials", None)
            principal = cache.get(_cache_key(*credential)) if cache is not None else None
            if principal is None:
                # In turn with other database work (core.db.pool_gate): a burst of callers not yet remembered (a
                # process just started, every credential just forgotten) must not open a connection each.
                principal, looked_up = await on_pool(request.app.state.engine, lambda: _lookup(request, *credential))
                (FROM_DATABASE if looked_up else REMEMBERED).inc()
            else:
                REMEMBERED.inc()
        state["principal"] = principal
    found: Principal | None = state["principal"]
    return found


async def _check_csrf(request: Request, principal: Principal) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        # The first parse is the one Starlette keeps for the handler: room for a big form (the playbook editor's
        # 200 steps are ~4,600 fields; the app's body limit bounds it anyway).
        value = (await request.form(max_fields=FORM_MAX_FIELDS)).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not principal.csrf_token or not same(sent, principal.csrf_token):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"missing or wrong CSRF token: send the {CSRF_HEADER} header (or the {CSRF_FIELD} form field) "
            "with cookie-authenticated writes",
        )


def _make_guard(role: str) -> Callable[[Request], Awaitable[Principal]]:
    async def guard(request: Request) -> Principal:
        principal = await current_principal(request)
        if principal is None:
            raise LoginRequired()
        if not principal.can(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs the {role} role; {principal.username} is {principal.role}",
            )
        if principal.via == "session" and request.method not in SAFE_METHODS:
            await _check_csrf(request, principal)
        return principal

    guard.__name__ = f"require_{role}"
    guard.__am_guard__ = role  # type: ignore[attr-defined]
    return guard


_GUARDS = {role: _make_guard(role) for role in ROLE_RANK}


def require(role: str) -> Any:
    """Dependency: the caller must be logged in with at least this role."""
    return Depends(_GUARDS[role])


def public(reason: str) -> Any:
    """Dependency marking a route deliberately open (health, login, signature-authenticated endpoints)."""

    async def open_route() -> None:
        return None

    open_route.__am_public__ = reason  # type: ignore[attr-defined]
    return Depends(open_route)


Viewer = Annotated[Principal, require("viewer")]
Responder = Annotated[Principal, require("responder")]
Approver = Annotated[Principal, require("approver")]
Admin = Annotated[Principal, require("admin")]
