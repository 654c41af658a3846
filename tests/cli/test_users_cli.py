"""`agent-monitor users unlock` as an operator runs it, against the test's database."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.api.test_access import login
from tests.api.test_login_limit import audit_rows, browser_at
from tests.factories import make_user

CLI = [sys.executable, "-m", "cli.main"]


def agent_monitor(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


async def test_unlock_lets_a_locked_out_admin_in_again(app, engine, database_url):
    make_user(engine, "admin", username="admin")
    async with browser_at(app, "198.51.100.30") as owner:
        for _ in range(10):
            assert (await login(owner, "admin", password="wrong guess")).status_code == 401
        assert (await login(owner, "admin")).status_code == 429
        done = agent_monitor(database_url, "users", "unlock", "Admin")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "unlocked admin: 10 failed logins forgotten\n"
        assert (await login(owner, "admin")).status_code == 303
    [event] = audit_rows(engine, "user.unlock")
    assert event.actor.startswith("cli:") and event.actor_kind == "cli"
    assert event.after == {"username": "admin", "cleared_failures": 10}
    again = agent_monitor(database_url, "users", "unlock", "admin")  # nothing to forget: still fine, audited
    assert again.returncode == 0 and again.stdout == "unlocked admin: 0 failed logins forgotten\n"
    assert len(audit_rows(engine, "user.unlock")) == 2


def test_unlock_of_an_unknown_user_fails_in_one_line(engine, database_url):
    done = agent_monitor(database_url, "users", "unlock", "ghost")
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "error: user 'ghost' does not exist\n")
    assert audit_rows(engine, "user.unlock") == []
