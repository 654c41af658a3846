"""Login and logout pages."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from api.auth import SESSION_COOKIE, Viewer, client_ip, public
from core.secrets import new_secret, same
from services.identity import IdentityError, RateLimited, authenticate, create_session, end_session
from web.templating import templates

router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "am_login_csrf"


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _secure(request: Request) -> bool:
    mode = request.app.state.settings.session_cookie_secure
    return mode == "always" or (mode == "auto" and request.url.scheme == "https")


def _login_form(request: Request, *, next_url: str, error: str | None = None, status_code: int = 200) -> Response:
    token = new_secret()
    response = templates.TemplateResponse(
        request,
        "auth/login.html",
        {"next": next_url, "csrf_token": token, "error": error},
        status_code=status_code,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/login"
    )
    return response


@router.get("/login", response_class=HTMLResponse, dependencies=[public("the login form")])
def login_page(request: Request, next: str | None = None) -> Response:  # noqa: A002
    return _login_form(request, next_url=_safe_next(next))


@router.post("/login", dependencies=[public("password login; rate limited; CSRF by double-submit cookie")])
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=100)],
    password: Annotated[str, Form(max_length=1000)],
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",  # noqa: A002
) -> Response:
    next_url = _safe_next(next)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not same(cookie, csrf_token):
        return _login_form(request, next_url=next_url, error="The form expired; please try again.", status_code=403)
    settings = request.app.state.settings

    def _login() -> str:
        with Session(request.app.state.engine) as session:
            user = authenticate(
                session=session,
                username=username,
                password=password,
                ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
            )
            created = create_session(
                session=session,
                user=user,
                ttl=timedelta(hours=settings.session_ttl_hours),
                ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
            )
            session.commit()
            return created.cookie_value

    try:
        cookie_value = await run_in_threadpool(_login)
    except RateLimited as err:
        response = _login_form(request, next_url=next_url, error=str(err), status_code=429)
        response.headers["Retry-After"] = str(err.retry_after)
        return response
    except IdentityError as err:
        return _login_form(request, next_url=next_url, error=str(err), status_code=401)
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie_value,
        max_age=int(settings.session_ttl_hours * 3600),
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, principal: Viewer) -> Response:
    if principal.session_id:
        with Session(request.app.state.engine) as session:
            end_session(session=session, session_id=principal.session_id)
            session.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
