"""How a worker picks up agents installed, updated or removed from the marketplace: it restarts.

Python cannot unload a module, and two versions of one package cannot be imported side by side, so a worker loads
the installed agents once, at start (services/agent_packages.load_plugins), and when they change it drains and
exits with code 75 (RESTART_REQUESTED) for its supervisor (`agent-monitor up`, systemd `Restart=always`, a
Kubernetes Deployment) to start it again with the new set. Temporal makes that safe: workflows are durable and
replayed by the next worker, running activities get WORKER_DRAIN_SECONDS to finish (an incident's step on the old
version completes on it), and whatever is still running then is retried by Temporal on a worker that has the
agent. Workers restart one at a time (a Postgres advisory lock, held from the decision until the process exits),
so the others keep polling meanwhile.

The change is announced by NOTIFY on the `agent_installs` channel; the installed set is also compared whenever the
LISTEN connection is (re)opened, so a notice missed while the database was away is not lost. Webhook agents need
no restart: the webhook activity reads them per attempt.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg
from sqlalchemy import Engine

from core.db import libpq_url
from core.marketplace import AGENTS_CHANNEL
from services.agent_packages import fingerprint, installed_python_agents

log = logging.getLogger(__name__)
# The exit code that asks the supervisor for a restart (cli/supervisor.py starts such a child again at once).
RESTART_REQUESTED = 75
RELOAD_LOCK_KEY = 0x4167_5265  # pg advisory lock: one worker restarting for new agents at a time
RECONNECT_SECONDS = 2.0

Fingerprint = tuple[tuple[str, str, str], ...]


def current(engine: Engine) -> Fingerprint:
    return fingerprint(installed_python_agents(engine))


def describe(before: Fingerprint, after: Fingerprint) -> str:
    """What changed, for the log: "disk_probe 1.0.0 → 1.1.0, old_agent 0.2.0 removed"."""
    old = {name: version for name, version, _ in before}
    new = {name: version for name, version, _ in after}
    parts = [f"{n} {old[n]} → {v}" if n in old else f"{n} {v} installed" for n, v in new.items() if old.get(n) != v]
    parts += [f"{n} {v} removed" for n, v in old.items() if n not in new]
    return ", ".join(parts) or "an agent's wheel changed"


class AgentWatch:
    """Sets `changed` when the installed Python agents differ from `loaded`; then holds the rolling-restart lock on
    its connection until `close()` (call it once the worker has drained, right before the process exits)."""

    def __init__(self, engine: Engine, loaded: Fingerprint) -> None:
        self.engine = engine
        self.loaded = loaded
        self.changed = asyncio.Event()
        self.reason = ""
        self._conn: psycopg.AsyncConnection[object] | None = None

    async def run(self) -> None:
        url = libpq_url(self.engine.url.render_as_string(hide_password=False))
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
            except Exception as err:
                log.warning("agent watch: cannot connect to Postgres (%s); retrying in %g s", err, RECONNECT_SECONDS)
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            try:
                await conn.execute(f"LISTEN {AGENTS_CHANNEL}")
                while True:
                    now = await asyncio.to_thread(current, self.engine)
                    if now != self.loaded:
                        await self._take_turn(conn, now)
                        return
                    async for _ in conn.notifies(stop_after=1):
                        pass
            except asyncio.CancelledError:
                await conn.close()
                raise
            except Exception as err:
                await conn.close()
                log.warning("agent watch: %s; listening again in %g s", err, RECONNECT_SECONDS)
                await asyncio.sleep(RECONNECT_SECONDS)

    async def _take_turn(self, conn: psycopg.AsyncConnection[object], now: Fingerprint) -> None:
        self.reason = describe(self.loaded, now)
        log.warning("installed agents changed (%s): waiting for this worker's turn to restart", self.reason)
        await conn.execute("SELECT pg_advisory_lock(%s)", (RELOAD_LOCK_KEY,))
        self._conn = conn  # the lock is held until close(): the next worker restarts after this one is gone
        log.warning("installed agents changed (%s): draining, then restarting to load them", self.reason)
        self.changed.set()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
