"""The login limit: atomic under parallel guesses over real HTTP, budgets per account, per address and per
(account, address) so a guesser elsewhere cannot lock the owner out, the admin's unlock, and the address it
counts: X-Forwarded-For only from TRUSTED_PROXIES, through `agent-monitor web` itself."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, col, select

from core.audit import AuditEvent
from tests.api.test_access import csrf_of, login
from tests.factories import make_user
from tests.peers import free_port

CLI = [sys.executable, "-m", "cli.main"]
OWNER_IP = "192.0.2.10"


def audit_rows(engine, action: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == action).order_by(col(AuditEvent.id))))


def browser_at(app, ip: str) -> httpx.AsyncClient:
    """A client of the real app whose TCP peer address is `ip`."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 40000)), base_url="http://testserver")


async def test_parallel_wrong_passwords_check_at_most_the_limit(server, engine):
    make_user(engine, "admin", username="boss")
    attempts = 40
    async with httpx.AsyncClient(base_url=server, timeout=60, limits=httpx.Limits(max_connections=attempts)) as bot:
        csrf = csrf_of((await bot.get("/login")).text)
        form = {"username": "boss", "csrf_token": csrf, "next": "/"}
        answers = await asyncio.gather(
            *(bot.post("/login", data={**form, "password": f"guess number {n}"}) for n in range(attempts))
        )
    # The password was checked exactly 10 times (before the fix: 24 of 40), the rest were refused unchecked.
    assert Counter(a.status_code for a in answers) == {401: 10, 429: 30}
    assert all(a.headers["retry-after"] == "900" for a in answers if a.status_code == 429)
    assert len(audit_rows(engine, "session.login_failed")) == 10


async def test_a_guesser_elsewhere_cannot_lock_the_owner_out(app, engine):
    make_user(engine, "admin", username="admin")
    async with browser_at(app, OWNER_IP) as owner:
        assert (await login(owner, "admin")).status_code == 303  # the owner's usual address
    for n in range(1, 4):  # three addresses guess: each gets its own 10, together they spend the account's 30
        async with browser_at(app, f"198.51.100.{n}") as guesser:
            for _ in range(10):
                assert (await login(guesser, "admin", password="wrong guess")).status_code == 401
            assert (await login(guesser, "admin")).status_code == 429  # even the right password now waits
    async with browser_at(app, "198.51.100.99") as stranger:
        assert (await login(stranger, "admin")).status_code == 429  # every unfamiliar address waits
    async with browser_at(app, OWNER_IP) as owner:
        assert (await login(owner, "admin", password="a typo")).status_code == 401
        assert (await login(owner, "admin")).status_code == 303
    async with browser_at(app, "198.51.100.1") as guesser:  # the owner's success did not clear the guessers'
        assert (await login(guesser, "admin")).status_code == 429


async def test_one_address_gets_30_failures_whichever_accounts(app, engine):
    for name in ("ann", "bob", "cy", "dee"):
        make_user(engine, "viewer", username=name)
    async with browser_at(app, "198.51.100.7") as sprayer:
        for name in ("ann", "bob", "cy"):
            for _ in range(10):
                assert (await login(sprayer, name, password="wrong guess")).status_code == 401
        assert (await login(sprayer, "dee")).status_code == 429
    async with browser_at(app, "198.51.100.8") as elsewhere:
        assert (await login(elsewhere, "dee")).status_code == 303


async def test_an_admin_unlocks_a_user_through_the_api(app, api, client_as, engine):
    user, _ = make_user(engine, "viewer", username="vera")
    async with browser_at(app, "198.51.100.20") as guesser:
        for _ in range(10):
            await login(guesser, "vera", password="wrong guess")
        assert (await login(guesser, "vera")).status_code == 429
        viewer = await client_as("viewer")
        assert (await viewer.post(f"/api/users/{user.id}/unlock")).status_code == 403
        unlocked = await api.post(f"/api/users/{user.id}/unlock")
        assert unlocked.status_code == 200 and unlocked.json() == {"user_id": user.id, "cleared_failures": 10}
        assert (await login(guesser, "vera")).status_code == 303
    assert (await api.post("/api/users/999999/unlock")).status_code == 404
    [event] = audit_rows(engine, "user.unlock")
    assert (event.actor, event.target_id, event.after) == (
        "root",
        str(user.id),
        {"username": "vera", "cleared_failures": 10},
    )


@contextmanager
def web_command(database_url: str, tmp_path: Path, trusted_proxies: str | None) -> Iterator[str]:
    """`agent-monitor web` as run in production, on this test's database; yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("TRUSTED_PROXIES", "FORWARDED_ALLOW_IPS")}
    env.update(
        DATABASE_URL=database_url,
        WEB_HOST="127.0.0.1",
        WEB_PORT=str(port),
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",  # never reached: the login needs no Temporal
        DATA_DIR=str(tmp_path / "data"),
    )
    if trusted_proxies is not None:
        env["TRUSTED_PROXIES"] = trusted_proxies
    log = (tmp_path / "web.log").open("w")
    proc = subprocess.Popen([*CLI, "web"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "web.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "agent-monitor web did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.mark.parametrize(
    ("trusted_proxies", "seen_ip"),
    [
        (None, "127.0.0.1"),  # the default: no proxy is believed, not even one on 127.0.0.1
        ("", "127.0.0.1"),
        ("127.0.0.1", "203.0.113.7"),
        ("10.0.0.0/8,127.0.0.0/8", "203.0.113.7"),
    ],
)
def test_forwarded_headers_count_only_from_trusted_proxies(database_url, engine, tmp_path, trusted_proxies, seen_ip):
    make_user(engine, "viewer", username="olga")
    forwarded = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    with web_command(database_url, tmp_path, trusted_proxies) as url, httpx.Client(base_url=url) as client:
        form = client.get("/login", headers=forwarded)
        # Believed, X-Forwarded-Proto makes the cookie Secure (SESSION_COOKIE_SECURE=auto); otherwise not.
        assert ("Secure" in form.headers["set-cookie"]) == (seen_ip != "127.0.0.1")
        csrf = form.cookies["am_login_csrf"]
        refused = client.post(
            "/login",
            data={"username": "olga", "password": "wrong guess", "csrf_token": csrf},
            headers={**forwarded, "Cookie": f"am_login_csrf={csrf}"},  # sent even when marked Secure
        )
        assert refused.status_code == 401
    [event] = audit_rows(engine, "session.login_failed")
    assert event.ip == seen_ip
