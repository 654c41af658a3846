"""Live streams end with their credentials (revoked or expired token, ended session, deactivated user) within
SSE_RECHECK_SECONDS, whichever web process the change went through; one user or token cannot take every slot.
Over a real uvicorn, as a browser or script holds a stream."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest
from sqlalchemy import event, text

from app.main import create_app
from core.secrets import sha256_hex
from tests.api.test_live import collect_until
from tests.conftest import app_client
from tests.factories import PASSWORD, make_user

RECHECK = 0.5
ENDS_WITHIN = 10 * RECHECK  # generous: the stream ends at the first re-check after the change
STREAM = "/api/events/stream"


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"sse_recheck_seconds": RECHECK})


@asynccontextmanager
async def opened(client: httpx.AsyncClient, **kwargs) -> AsyncIterator[httpx.Response]:
    async with client.stream("GET", STREAM, **kwargs) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        yield response


async def refused(client: httpx.AsyncClient, **kwargs) -> httpx.Response:
    """A connect that must be refused (fails at once, not after the client's timeout, if a stream opens)."""
    async with client.stream("GET", STREAM, **kwargs) as response:
        assert response.status_code != 200, "the stream was opened"
        await response.aread()
    return response


async def ends(response: httpx.Response) -> float:
    """Seconds until the server ends the stream (what it sends meanwhile is read and dropped)."""
    started = time.monotonic()

    async def drain() -> None:
        async for _ in response.aiter_bytes():
            pass

    await asyncio.wait_for(drain(), ENDS_WITHIN)
    return time.monotonic() - started


async def delivers_new_events(api: httpx.AsyncClient, response: httpx.Response) -> None:
    """The stream is still live: an incident opened now arrives on it."""
    created = (await api.post("/api/incidents", json={"title": "live", "service": "s", "service_url": None})).json()
    await collect_until(response, lambda s: any(e["incident_id"] == created["id"] for e in s), 10)


async def login(browser: httpx.AsyncClient, username: str) -> str:
    """Log in through the form like a browser; return the page's CSRF token."""
    form = await browser.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf is not None
    fields = {"username": username, "password": PASSWORD, "csrf_token": csrf.group(1), "next": "/"}
    assert (await browser.post("/login", data=fields)).status_code == 303
    page = re.search(r'name="csrf_token" value="([^"]+)"', (await browser.get("/")).text)
    assert page is not None
    return page.group(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_revoked_or_expired_token_ends_its_streams_whichever_process_revoked_it(
    server, app, api, engine, settings, temporal_client
):
    _, revoked = make_user(engine, "viewer")
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        kept = (await http.post("/api/me/tokens", json={"name": "kept"}, headers=bearer(revoked))).json()["token"]
        expiring = (await http.post("/api/me/tokens", json={"name": "old"}, headers=bearer(revoked))).json()
        ids = {t["name"]: t["id"] for t in (await http.get("/api/me/tokens", headers=bearer(kept))).json()}
        # Another web process (its own app and hub) takes the revoke: nothing reaches this one but the database.
        other = create_app(settings, engine=engine, temporal=temporal_client)
        async with (
            app_client(other, headers=bearer(kept)) as elsewhere,
            opened(http, headers=bearer(revoked)) as doomed,
            opened(http, headers=bearer(expiring["token"])) as expired,
            opened(http, headers=bearer(kept)) as survivor,
        ):
            assert app.state.event_hub.clients == 3
            assert (await elsewhere.delete(f"/api/tokens/{ids['tests']}")).status_code == 204
            with engine.begin() as db:  # the third token's expiry passes
                db.execute(text("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = :id"),
                           {"id": ids["old"]})  # fmt: skip
            took = await asyncio.gather(ends(doomed), ends(expired))
            print(f"streams ended {took[0]:.2f} s after the revoke, {took[1]:.2f} s after the expiry")
            assert (await refused(http, headers=bearer(revoked))).status_code == 401  # the reconnect
            assert (await refused(http, headers=bearer(expiring["token"]))).status_code == 401
            await asyncio.sleep(3 * RECHECK)
            assert app.state.event_hub.clients == 1
            await delivers_new_events(api, survivor)  # the user's other token keeps its stream


async def test_a_deactivated_user_loses_every_stream_token_and_session(server, app, api, engine):
    user, token = make_user(engine, "viewer")
    _, bystander = make_user(engine, "viewer")
    async with (
        httpx.AsyncClient(base_url=server, timeout=30) as http,
        httpx.AsyncClient(base_url=server, timeout=30) as browser,
    ):
        await login(browser, user.username)
        async with (
            opened(http, headers=bearer(token)) as scripted,
            opened(browser) as page,
            opened(http, headers=bearer(bystander)) as other_user,
        ):
            assert (await api.patch(f"/api/users/{user.id}", json={"is_active": False})).status_code == 200
            took = await asyncio.gather(ends(scripted), ends(page))
            print(f"deactivated: streams ended {max(took):.2f} s after")
            assert (await refused(http, headers=bearer(token))).status_code == 401
            assert (await refused(browser)).status_code == 401
            await asyncio.sleep(3 * RECHECK)
            assert app.state.event_hub.clients == 1
            await delivers_new_events(api, other_user)


async def test_an_ended_session_ends_its_stream_expiry_password_change_and_logout(server, app, engine):
    user, _ = make_user(engine, "viewer")
    async with (
        httpx.AsyncClient(base_url=server, timeout=30) as laptop,
        httpx.AsyncClient(base_url=server, timeout=30) as phone,
        httpx.AsyncClient(base_url=server, timeout=30) as tablet,
    ):
        csrf = await login(laptop, user.username)
        await login(phone, user.username)
        await login(tablet, user.username)
        tablet_session = sha256_hex(tablet.cookies["am_session"])
        async with opened(laptop) as on_laptop, opened(phone) as on_phone, opened(tablet) as on_tablet:
            with engine.begin() as db:
                db.execute(text("UPDATE user_sessions SET expires_at = now() - interval '1 second' WHERE id = :id"),
                           {"id": tablet_session})  # fmt: skip
            print(f"expired session: stream ended after {await ends(on_tablet):.2f} s")
            assert (await refused(tablet)).status_code == 401

            new_password = {"current_password": PASSWORD, "new_password": "a much longer secret"}
            changed = await laptop.post("/api/me/password", json=new_password, headers={"X-CSRF-Token": csrf})
            assert changed.status_code == 204  # every other session of the user ends
            print(f"password change: the other session's stream ended after {await ends(on_phone):.2f} s")
            assert (await refused(phone)).status_code == 401
            await asyncio.sleep(3 * RECHECK)
            assert app.state.event_hub.clients == 1  # the session that changed it keeps its stream

            assert (await laptop.post("/logout", data={"csrf_token": csrf})).status_code == 303
            print(f"logout: stream ended after {await ends(on_laptop):.2f} s")
    assert app.state.event_hub.clients == 0


async def test_one_user_or_token_cannot_take_every_slot(server, app, engine):
    app.state.settings.sse_max_clients = 4
    app.state.settings.sse_max_per_user = 3
    app.state.settings.sse_max_per_token = 2
    hog, first = make_user(engine, "viewer")
    _, other = make_user(engine, "viewer")
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        second = (await http.post("/api/me/tokens", json={"name": "2"}, headers=bearer(first))).json()["token"]
        async with opened(http, headers=bearer(first)), opened(http, headers=bearer(first)):
            over = await refused(http, headers=bearer(first))
            assert over.status_code == 429 and over.headers["retry-after"] == "5"
            assert "for this API token (2, SSE_MAX_PER_TOKEN)" in over.json()["detail"]
            async with opened(http, headers=bearer(second)):
                over = await refused(http, headers=bearer(second))
                assert over.status_code == 429 and over.headers["retry-after"] == "5"
                assert f"for user {hog.username} (3, SSE_MAX_PER_USER)" in over.json()["detail"]
                async with opened(http, headers=bearer(other)):  # a second user still gets a slot
                    full = await refused(http, headers=bearer(other))
                    assert full.status_code == 503 and "on this web process (4)" in full.json()["detail"]
        # closed streams give their places back
        for _ in range(100):
            if app.state.event_hub.clients == 0:
                break
            await asyncio.sleep(0.05)
        async with opened(http, headers=bearer(first)), opened(http, headers=bearer(first)):
            assert app.state.event_hub.clients == 2


async def test_one_query_per_interval_re_checks_every_stream(server, app, engine):
    users = [make_user(engine, "viewer") for _ in range(3)]
    statements: list[str] = []

    def counted(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    async with AsyncExitStack() as streams:
        browser = await streams.enter_async_context(httpx.AsyncClient(base_url=server, timeout=30))
        http = await streams.enter_async_context(httpx.AsyncClient(base_url=server, timeout=30))
        await login(browser, users[0][0].username)
        for _ in range(2):
            await streams.enter_async_context(opened(browser))
            for _, token in users:
                await streams.enter_async_context(opened(http, headers=bearer(token)))
        assert app.state.event_hub.clients == 8
        event.listen(engine, "before_cursor_execute", counted)
        try:
            await asyncio.sleep(10 * RECHECK)
        finally:
            event.remove(engine, "before_cursor_execute", counted)
    rechecks = [s for s in statements if "api_tokens" in s and "user_sessions" in s]
    print(f"{len(statements)} statements in {10 * RECHECK:g} s for 8 streams; {len(rechecks)} re-checks")
    assert rechecks and len(rechecks) == len(statements) <= 12  # ~one per interval for all, not one per stream
