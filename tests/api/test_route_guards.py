"""Every route is guarded by a role or is deliberately public: a new unguarded route cannot land."""

from __future__ import annotations

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import Mount

from api.auth import require
from app.main import flat_routes

# Public on purpose, and why; anything else must carry require(role).
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),  # Prometheus; METRICS_TOKEN guards it when set (api/routes/metrics.py)
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/api/slack/interactions"),  # authenticated by Slack's request signature instead
    ("GET", "/approvals/email/{token}"),  # the single-use link is the credential
    ("POST", "/approvals/email/{token}"),
    ("GET", "/incidents/email/{token}"),  # the single-use acknowledge link is the credential
    ("POST", "/incidents/email/{token}"),
    ("GET", "/status"),  # the public status page: public services' names, status, availability and public updates
    ("GET", "/status/api/summary.json"),  # the same as JSON (tests/web/test_status_page.py walks both)
}
PUBLIC_MOUNTS = {"/static"}


def _routes(app):
    """(methods, path, dependant | None, route) for every route: the app serves them as one list (app/main.py)."""
    for route in app.routes:
        assert not hasattr(route, "original_router"), "an included router was left in the app's routes"
        if isinstance(route, APIRoute):
            yield route.methods, route.path, route.dependant, route
        else:
            yield getattr(route, "methods", None), getattr(route, "path", ""), None, route


def _markers(dependant) -> tuple[set[str], set[str]]:
    guards, public = set(), set()
    stack = [dependant]
    while stack:
        current = stack.pop()
        call = getattr(current, "call", None)
        if hasattr(call, "__am_guard__"):
            guards.add(call.__am_guard__)
        if hasattr(call, "__am_public__"):
            public.add(call.__am_public__)
        stack.extend(current.dependencies)
    return guards, public


def test_every_route_has_a_guard_or_is_declared_public(app):
    problems, seen = [], 0
    for methods, path, dependant, route in _routes(app):
        if isinstance(route, Mount):
            if route.path not in PUBLIC_MOUNTS:
                problems.append(f"mount {route.path} is not known to be public")
            continue
        seen += 1
        if dependant is None:
            # Plain ASGI endpoints (the live stream) declare the role they check themselves.
            if getattr(getattr(route, "endpoint", None), "__am_guard__", None) is None:
                problems.append(f"{methods} {path}: not a FastAPI route and declares no guard")
            continue
        guards, public = _markers(dependant)
        for method in methods or ():
            if (method, path) in PUBLIC:
                if not public or guards:
                    problems.append(f"{method} {path}: listed public but not marked public() alone")
            elif public and not guards:
                problems.append(f"{method} {path}: marked public() but not in this test's PUBLIC list")
            elif not guards:
                problems.append(f"{method} {path}: no require(role) guard")
    assert seen > 15
    assert problems == []


def test_walker_catches_an_unguarded_route(app):
    @app.get("/api/forgot-a-guard")
    def forgot() -> dict:
        return {}

    unguarded = [
        path
        for methods, path, dependant, _ in _routes(app)
        if dependant is not None and _markers(dependant) == (set(), set())
    ]
    assert unguarded == ["/api/forgot-a-guard"]


def test_a_router_included_with_a_guard_of_its_own_stops_the_app_from_being_built():
    """The app serves its routes as one flat list (app/main.py: flat_routes); a guard given at inclusion is not on
    the routes themselves, and flattening would drop it: refused, not served unguarded."""
    inner = APIRouter()

    @inner.get("/secret")
    def secret() -> dict[str, str]:
        return {}

    outer = APIRouter()
    outer.include_router(inner, dependencies=[require("admin")])
    with pytest.raises(RuntimeError, match="dependencies"):
        flat_routes(outer)
    plain = APIRouter()
    plain.include_router(inner)
    assert [route.path for route in flat_routes(plain)] == ["/secret"]
