"""Who may do what: the role matrix over the API, sessions, CSRF, tokens, rate limits, headers."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from core.audit import AuditEvent
from core.roles import ROLES
from tests.conftest import app_client
from tests.factories import PASSWORD, incident_payload, make_user

# (method, path template, body, the least role allowed). {incident}, {user}, {team}, {token} are filled in.
MATRIX = [
    ("GET", "/api/incidents", None, "viewer"),
    ("GET", "/api/incidents/{incident}", None, "viewer"),
    ("GET", "/api/me", None, "viewer"),
    ("GET", "/api/teams", None, "viewer"),
    ("GET", "/api/openapi.json", None, "viewer"),
    ("GET", "/", None, "viewer"),
    ("GET", "/incidents/{incident}", None, "viewer"),
    ("POST", "/api/incidents", incident_payload(), "responder"),
    ("PUT", "/api/incidents/{incident}/assignee", {"team_id": "{team}"}, "responder"),
    ("GET", "/api/users", None, "admin"),
    ("POST", "/api/users", {"username": "new-{role}", "role": "viewer"}, "admin"),
    ("PATCH", "/api/users/{user}", {"display_name": "Renamed"}, "admin"),
    ("POST", "/api/teams", {"name": "team-{role}"}, "admin"),
    ("PUT", "/api/teams/{team}/members/{user}", None, "admin"),
    ("DELETE", "/api/teams/{team}/members/{user}", None, "admin"),
    ("GET", "/api/audit", None, "admin"),
    ("GET", "/api/audit/export", None, "admin"),
    ("GET", "/admin/audit", None, "admin"),
]
RANK = {role: i for i, role in enumerate(ROLES)}


def _fill(value, ids: dict[str, object]):
    if isinstance(value, str):
        filled = value.format(**ids)
        return int(filled) if value.startswith("{") and filled.isdigit() else filled
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


async def _setup_targets(api) -> dict[str, object]:
    incident = (await api.post("/api/incidents", json=incident_payload())).json()
    user = (await api.post("/api/users", json={"username": "target", "role": "viewer"})).json()
    team = (await api.post("/api/teams", json={"name": "sre"})).json()
    return {"incident": incident["id"], "user": user["id"], "team": team["id"]}


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_can_do_exactly_its_actions(api, client_as, role):
    ids = await _setup_targets(api)
    client = await client_as(role)
    outcomes = {}
    for method, path, body, least in MATRIX:
        filled = {**ids, "role": role}
        response = await client.request(method, _fill(path, filled), json=_fill(body, filled))
        allowed = RANK[role] >= RANK[least]
        outcomes[(method, path)] = (response.status_code, allowed)
        if allowed:
            assert response.status_code < 400, (method, path, response.text)
        else:
            assert response.status_code == 403, (method, path, response.status_code)
            assert f"this needs the {least} role" in response.json()["detail"]
    assert len(outcomes) == len(MATRIX)


async def test_anonymous_gets_401_from_the_api_and_a_login_redirect_from_pages(anonymous):
    api_answer = await anonymous.get("/api/incidents")
    assert api_answer.status_code == 401
    assert api_answer.headers["www-authenticate"] == "Bearer"
    page = await anonymous.get("/incidents/5?tab=steps")
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fincidents%2F5%3Ftab%3Dsteps"
    assert (await anonymous.post("/api/incidents", json=incident_payload())).status_code == 401
    assert (await anonymous.get("/api/openapi.json")).status_code == 401
    assert (await anonymous.get("/healthz")).status_code == 200


async def login(client: httpx.AsyncClient, username: str, password: str = PASSWORD, next_url: str = "/"):
    form = await client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    return await client.post(
        "/login", data={"username": username, "password": password, "csrf_token": csrf, "next": next_url}
    )


def csrf_of(page_html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page_html).group(1)


async def test_login_sets_a_hardened_session_cookie_and_logout_ends_it(app, engine):
    make_user(engine, "viewer", username="vera")
    async with app_client(app) as browser:
        answer = await login(browser, "vera", next_url="/incidents")
        assert answer.status_code == 303 and answer.headers["location"] == "/incidents"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("am_session=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
        home = await browser.get("/")
        assert home.status_code == 200 and "vera (viewer)" in home.text
        await browser.post("/logout", data={"csrf_token": csrf_of(home.text)})
        assert (await browser.get("/api/me")).status_code == 401

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as tls:
        answer = await login(tls, "vera")
        assert "Secure" in answer.headers["set-cookie"]


async def test_login_refuses_wrong_passwords_open_redirects_and_forged_forms(app, engine):
    make_user(engine, "viewer", username="olga")
    async with app_client(app) as browser:
        wrong = await login(browser, "olga", password="not the password")
        assert wrong.status_code == 401 and "wrong username or password" in wrong.text
        unknown = await login(browser, "nobody")
        assert unknown.status_code == 401 and "wrong username or password" in unknown.text
        evil = await login(browser, "olga", next_url="//evil.example/steal")
        assert evil.status_code == 303 and evil.headers["location"] == "/"
    async with app_client(app) as forger:
        forged = await forger.post("/login", data={"username": "olga", "password": PASSWORD, "csrf_token": "x"})
        assert forged.status_code == 403 and "am_session" not in forged.headers.get("set-cookie", "")


async def test_cookie_authenticated_writes_need_the_csrf_token(app, engine):
    make_user(engine, "responder", username="rita")
    async with app_client(app) as browser:
        await login(browser, "rita")
        token = csrf_of((await browser.get("/")).text)
        refused = await browser.post("/api/incidents", json=incident_payload())
        assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
        wrong = await browser.post("/api/incidents", json=incident_payload(), headers={"X-CSRF-Token": "nope"})
        assert wrong.status_code == 403
        accepted = await browser.post("/api/incidents", json=incident_payload(), headers={"X-CSRF-Token": token})
        assert accepted.status_code == 201, accepted.text
        refused_form = await browser.post("/logout", data={"csrf_token": "forged"})
        assert refused_form.status_code == 403


async def test_password_change_ends_every_other_session(app, engine):
    make_user(engine, "viewer", username="pat")
    async with app_client(app) as laptop, app_client(app) as phone:
        await login(laptop, "pat")
        await login(phone, "pat")
        assert (await phone.get("/api/me")).status_code == 200
        token = csrf_of((await laptop.get("/")).text)
        weak = await laptop.post(
            "/api/me/password",
            json={"current_password": PASSWORD, "new_password": "short"},
            headers={"X-CSRF-Token": token},
        )
        assert weak.status_code == 422 and "at least 12 characters" in weak.json()["detail"]
        changed = await laptop.post(
            "/api/me/password",
            json={"current_password": PASSWORD, "new_password": "a much longer secret"},
            headers={"X-CSRF-Token": token},
        )
        assert changed.status_code == 204
        assert (await laptop.get("/api/me")).status_code == 200
        assert (await phone.get("/api/me")).status_code == 401
    async with app_client(app) as fresh:
        assert (await login(fresh, "pat")).status_code == 401
        assert (await login(fresh, "pat", password="a much longer secret")).status_code == 303


async def test_api_tokens_are_shown_once_hashed_tracked_and_revocable(app, api, engine):
    created = await api.post("/api/me/tokens", json={"name": "alertmanager"})
    assert created.status_code == 201
    token = created.json()["token"]
    assert token.startswith("amt_") and created.json()["prefix"] == token[:10]
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT token_hash FROM api_tokens WHERE id = :id"), {"id": created.json()["id"]})
        assert token not in stored.scalar_one()
    async with app_client(app, headers={"Authorization": f"Bearer {token}"}) as bot:
        assert (await bot.get("/api/me")).json()["username"] == "root"
    listed = (await api.get("/api/me/tokens")).json()
    mine = next(t for t in listed if t["id"] == created.json()["id"])
    assert "token" not in mine and mine["last_used_at"] is not None
    assert (await api.delete(f"/api/tokens/{mine['id']}")).status_code == 204
    assert (await api.delete(f"/api/tokens/{mine['id']}")).status_code == 204  # repeat is harmless
    async with app_client(app, headers={"Authorization": f"Bearer {token}"}) as bot:
        assert (await bot.get("/api/me")).status_code == 401
    async with app_client(app, headers={"Authorization": "Bearer amt_forged"}) as forger:
        assert (await forger.get("/api/me")).status_code == 401


async def test_other_users_tokens_are_invisible_to_non_admins(api, client_as):
    created = (await api.post("/api/me/tokens", json={"name": "root's"})).json()
    viewer = await client_as("viewer")
    assert (await viewer.delete(f"/api/tokens/{created['id']}")).status_code == 404


async def test_deactivated_users_lose_access_at_once(app, api, engine):
    user, token = make_user(engine, "responder", username="leaver")
    updated = await api.patch(f"/api/users/{user.id}", json={"is_active": False})
    assert updated.status_code == 200 and updated.json()["is_active"] is False
    async with app_client(app, headers={"Authorization": f"Bearer {token}"}) as gone:
        assert (await gone.get("/api/me")).status_code == 401


async def test_expired_credentials_are_refused_and_use_is_stamped_at_most_once_a_minute(app, engine):
    user, token = make_user(engine, "viewer", username="stamp")

    def stamps() -> tuple:
        with engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT t.last_used_at, s.last_seen_at FROM api_tokens t "
                    "LEFT JOIN user_sessions s ON s.user_id = t.user_id WHERE t.user_id = :u"
                ),
                {"u": user.id},
            ).one()

    def age(sql: str) -> None:
        with engine.begin() as conn:
            conn.execute(text(sql), {"u": user.id})

    async with app_client(app, headers={"Authorization": f"Bearer {token}"}) as bot:
        assert (await bot.get("/api/me")).status_code == 200
        first = stamps()[0]
        assert first is not None
        assert (await bot.get("/api/me")).status_code == 200
        assert stamps()[0] == first  # within the minute: not written again
        age("UPDATE api_tokens SET last_used_at = last_used_at - interval '2 minutes' WHERE user_id = :u")
        app.state.credentials.clear()  # the process remembers a caller at most 30 s: that much later
        assert (await bot.get("/api/me")).status_code == 200
        assert stamps()[0] > first
        age("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE user_id = :u")
        await refused_once_notified(bot)  # changed from outside the web process: its NOTIFY reaches it

    async with app_client(app) as browser:
        await login(browser, "stamp")
        assert (await browser.get("/api/me")).json()["username"] == "stamp"
        age("UPDATE user_sessions SET last_seen_at = last_seen_at - interval '2 minutes' WHERE user_id = :u")
        aged = stamps()[1]
        app.state.credentials.clear()
        assert (await browser.get("/api/me")).status_code == 200
        assert stamps()[1] > aged
        age("UPDATE user_sessions SET expires_at = now() - interval '1 second' WHERE user_id = :u")
        await refused_once_notified(browser)


async def refused_once_notified(client: httpx.AsyncClient) -> None:
    """/api/me answers 401 once Postgres's NOTIFY of the change has reached the app (milliseconds; 10 s at most)."""
    deadline = time.monotonic() + 10
    while (answer := await client.get("/api/me")).status_code != 401:
        assert answer.status_code == 200 and time.monotonic() < deadline, answer.text
        await asyncio.sleep(0.02)


async def test_login_is_rate_limited(app, engine):
    make_user(engine, "viewer", username="target")
    async with app_client(app) as attacker:
        for _ in range(10):
            assert (await login(attacker, "target", password="guess")).status_code == 401
        limited = await login(attacker, "target")  # even the right password now waits
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "900"


async def test_security_headers_on_pages_and_api(api):
    for path in ("/", "/api/incidents", "/healthz"):
        headers = (await api.get(path)).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"


async def test_validation_errors_for_identity_endpoints(api):
    bad_user = await api.post("/api/users", json={"username": "A B", "role": "god"})
    assert bad_user.status_code == 422
    assert {e["field"] for e in bad_user.json()["errors"]} == {"username", "role"}
    assert (await api.post("/api/users", json={"username": "dup"})).status_code == 201
    assert (await api.post("/api/users", json={"username": "dup"})).status_code == 409
    weak = await api.post("/api/users", json={"username": "weak", "password": "123"})
    assert weak.status_code == 422 and "at least 12 characters" in weak.json()["detail"]
    me = (await api.get("/api/me")).json()
    assert (await api.patch(f"/api/users/{me['id']}", json={"role": "viewer"})).status_code == 409
    assert (await api.patch("/api/users/999999", json={"role": "viewer"})).status_code == 404
    assert (await api.put("/api/incidents/1/assignee", json={"user_id": 999999})).status_code in (404, 422)


async def test_audit_table_refuses_updates_and_deletes(api, engine):
    await api.post("/api/teams", json={"name": "immutable"})
    with engine.connect() as conn:
        for statement in ("UPDATE audit_events SET actor = 'someone else'", "DELETE FROM audit_events"):
            with pytest.raises(Exception, match="append-only"):
                conn.execute(text(statement))
            conn.rollback()
    with Session(engine) as session:
        assert session.exec(select(AuditEvent).where(AuditEvent.action == "team.create")).one().actor == "root"


async def test_text_the_database_cannot_store_is_a_422(api, engine):
    response = await api.post("/api/users", json={"username": "nul", "display_name": "a\u0000b"})
    assert response.status_code == 422
    assert "NUL" in response.json()["detail"]
    assert (await api.post("/api/teams", json={"name": "fine"})).status_code == 201  # the connection still works
