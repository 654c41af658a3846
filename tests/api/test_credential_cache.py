"""A web process remembers who a token or session belongs to while Postgres says nothing changed
(api/credential_cache.py): a change made through this process is honoured on the very next request, one made
elsewhere (another web process, the CLI, plain SQL) once its NOTIFY arrives, and without its LISTEN connection the
process remembers no one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import event, text

from tests.conftest import app_client
from tests.factories import make_user


@contextmanager
def caller_lookups(engine) -> Iterator[list[str]]:
    """The statements that look a caller up by its token's hash, as the app sends them to Postgres."""
    seen: list[str] = []

    def note(_conn, _cursor, statement, _params, _context, _many) -> None:
        if statement.startswith("WITH live") and "api_tokens.token_hash =" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not within {within:g} s: {what}"
        await asyncio.sleep(0.02)


async def scraped(app, name: str) -> float:
    """A metric's value (summed over its labels' lines when a label is given in `name`) from GET /metrics."""
    async with app_client(app) as prometheus:
        text_ = (await prometheus.get("/metrics")).text
    lines = [line for line in text_.splitlines() if line.startswith(name) and not line.startswith("#")]
    assert lines, f"{name} is not in /metrics"
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


async def listening(app) -> None:
    async def up() -> bool:
        return app.state.credentials.listening

    await eventually(up, "the credential listener is up")


async def test_a_caller_is_looked_up_once_and_a_revoke_through_the_app_is_refused_at_once(app, api, engine):
    await listening(app)
    _, token = make_user(engine, "responder", username="pat")
    async with app_client(app, headers={"Authorization": f"Bearer {token}"}) as pat:
        assert await scraped(app, "agent_monitor_credential_listener_up") == 1
        remembered = await scraped(app, 'agent_monitor_caller_lookups_total{source="remembered"}')
        with caller_lookups(engine) as lookups:
            for _ in range(5):
                assert (await pat.get("/api/me")).json()["username"] == "pat"
            assert len(lookups) == 1  # then remembered
            assert await scraped(app, 'agent_monitor_caller_lookups_total{source="remembered"}') == remembered + 4

            # Any credential's change makes the process forget every caller: pat is looked up again.
            _, other = make_user(engine, "viewer", username="sam")
            async with app_client(app, headers={"Authorization": f"Bearer {other}"}) as sam:
                [sams] = (await sam.get("/api/me/tokens")).json()
            assert (await api.delete(f"/api/tokens/{sams['id']}")).status_code == 204
            before = len(lookups)
            assert (await pat.get("/api/me")).status_code == 200
            assert (await pat.get("/api/me")).status_code == 200
            assert len(lookups) == before + 1  # looked up again, once

        [pats] = (await pat.get("/api/me/tokens")).json()
        assert (await api.delete(f"/api/tokens/{pats['id']}")).status_code == 204
        assert (await pat.get("/api/me")).status_code == 401  # the very next request


async def test_a_change_made_outside_the_web_process_is_honoured_once_postgres_notifies_it(app, engine):
    await listening(app)
    user, token = make_user(engine, "admin", username="ops")
    async with app_client(app, headers={"Authorization": f"Bearer {token}"}) as ops:
        assert (await ops.get("/api/me")).json()["role"] == "admin"
        with engine.begin() as db:  # as the CLI or another web process would: nothing of this app sees it
            db.execute(text("UPDATE users SET role = 'viewer' WHERE id = :id"), {"id": user.id})

        async def demoted() -> bool:
            return (await ops.get("/api/me")).json()["role"] == "viewer"

        await eventually(demoted, "the role change is seen")  # milliseconds: the cache keeps a caller 30 s
        assert (await ops.get("/api/users")).status_code == 403

        with engine.begin() as db:
            db.execute(text("DELETE FROM api_tokens WHERE user_id = :id"), {"id": user.id})

        async def refused() -> bool:
            return (await ops.get("/api/me")).status_code == 401

        await eventually(refused, "the deleted token is refused")


async def test_without_its_listener_the_process_remembers_no_one(app, engine):
    await listening(app)
    app.state.credentials.reconnect_seconds = 5  # time enough to look at it while it is down
    user, token = make_user(engine, "viewer", username="vic")
    async with app_client(app, headers={"Authorization": f"Bearer {token}"}) as vic:
        assert (await vic.get("/api/me")).status_code == 200
        assert len(app.state.credentials) == 1
        with engine.begin() as db:  # the listener's connection is cut (a database restart, a proxy's timeout)
            cut = db.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN am_credentials'")
            ).all()
        assert cut == [(True,)]

        async def down() -> bool:
            return not app.state.credentials.listening

        await eventually(down, "the cache knows its listener is gone")
        assert len(app.state.credentials) == 0
        assert await scraped(app, "agent_monitor_credential_listener_up") == 0
        with caller_lookups(engine) as lookups:
            assert (await vic.get("/api/me")).status_code == 200
            assert (await vic.get("/api/me")).status_code == 200
            assert len(lookups) == 2  # nothing remembered meanwhile
        # A change now sends its NOTIFY to no one: it is still honoured at once.
        with engine.begin() as db:
            db.execute(text("UPDATE api_tokens SET revoked_at = now() WHERE user_id = :id"), {"id": user.id})
        assert (await vic.get("/api/me")).status_code == 401
        assert not app.state.credentials.listening
        await listening(app)  # it reconnects by itself
