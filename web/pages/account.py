"""The caller's account: password change and personal API tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session, col, select

from api.auth import Viewer, actor_of, require
from api.deps import Int32Id, SessionDep
from core.identity import ApiToken, User
from core.secrets import verify_password
from core.tables import utcnow
from services.identity import IdentityError, change_password, create_token, revoke_token
from web.templating import templates

router = APIRouter(include_in_schema=False, dependencies=[require("viewer")])


def _render(
    request: Request,
    session: Session,
    user_id: int,
    *,
    message: str | None = None,
    error: str | None = None,
    new_token: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    user = session.get(User, user_id)
    tokens = session.exec(select(ApiToken).where(ApiToken.user_id == user_id).order_by(col(ApiToken.id).desc())).all()
    return templates.TemplateResponse(
        request,
        "account/index.html",
        {"user": user, "tokens": tokens, "message": message, "error": error, "new_token": new_token},
        status_code=status_code,
    )


@router.get("/account", response_class=HTMLResponse)
def account(request: Request, principal: Viewer, session: SessionDep) -> HTMLResponse:
    return _render(request, session, principal.user_id)


@router.post("/account/password", response_class=HTMLResponse)
def account_password(
    request: Request,
    principal: Viewer,
    session: SessionDep,
    current_password: Annotated[str, Form(max_length=1000)],
    new_password: Annotated[str, Form(max_length=1000)],
) -> HTMLResponse:
    user = session.get(User, principal.user_id)
    assert user is not None
    if not verify_password(user.password_hash, current_password):
        return _render(request, session, user.id, error="Current password is wrong.", status_code=403)  # type: ignore[arg-type]
    try:
        change_password(
            session=session,
            actor=actor_of(request, principal),
            user=user,
            new_password=new_password,
            keep_session=principal.session_id,
        )
    except IdentityError as err:
        return _render(request, session, user.id, error=f"{err}.", status_code=422)  # type: ignore[arg-type]
    session.commit()
    return _render(request, session, principal.user_id, message="Password changed; your other sessions ended.")


@router.post("/account/tokens", response_class=HTMLResponse)
def account_new_token(
    request: Request,
    principal: Viewer,
    session: SessionDep,
    name: Annotated[str, Form(min_length=1, max_length=100)],
    expires_in_days: Annotated[int | None, Form(ge=1, le=3650)] = None,
) -> HTMLResponse:
    user = session.get(User, principal.user_id)
    assert user is not None
    expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    token, _ = create_token(
        session=session, actor=actor_of(request, principal), user=user, name=name, expires_at=expires
    )
    session.commit()
    return _render(request, session, principal.user_id, new_token=token)


@router.post("/account/tokens/{token_id}/revoke")
def account_revoke_token(request: Request, token_id: Int32Id, principal: Viewer, session: SessionDep) -> Response:
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != principal.user_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"token {token_id} does not exist")
    revoke_token(session=session, actor=actor_of(request, principal), token=token)
    session.commit()
    return RedirectResponse("/account", status_code=303)
