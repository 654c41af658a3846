"""Who a token or session cookie belongs to, remembered by one web process while Postgres says nothing changed.

Every request names its caller, and looking it up cost a worker thread, a pooled connection and a round trip: about
1.7 ms of the web's CPU per request, a third of an incident page's read. So a process keeps the principals it has
looked up, and drops them all the moment any credential changes:

- triggers on `users`, `api_tokens` and `user_sessions` (migration 0023) NOTIFY `am_credentials` when a token is
  revoked or its expiry changed, a session ends or is shortened, a user's role, name or active flag changes, or a
  row goes (also by TRUNCATE) — whoever changes it: this process, another web process, the CLI, plain SQL;
- this process's own changes clear it as they commit (ORM events below), before their answer is sent, so whoever
  revoked a token or logged out sees it refused on their very next request, whatever the NOTIFY's timing;
- remembered principals are used only while this process's LISTEN connection is up: when it drops, everything is
  forgotten and every request asks Postgres again until it is back; and a lookup that began before a change is not
  remembered (a generation number), so it cannot put back what the change removed;
- an entry lives at most CREDENTIAL_CACHE_SECONDS (30 s; 0 turns the cache off), so a token's or session's use
  stamp (`last_used_at`, `last_seen_at`, written by the lookup at most once a minute) stays current; and never past
  its credential's expiry.

Another web process sees a change when the NOTIFY reaches it: milliseconds, as a request already in flight would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from core.db import libpq_url
from core.identity import CREDENTIALS_CHANNEL, ApiToken, User, UserSession

if TYPE_CHECKING:
    from api.auth import Principal

log = logging.getLogger(__name__)

MAX_ENTRIES = 10_000  # past that, everything is forgotten and filled again (a few thousand callers: never, in practice)
RECONNECT_SECONDS = 1.0
CREDENTIAL_TABLES = frozenset({User.__tablename__, ApiToken.__tablename__, UserSession.__tablename__})
CREDENTIAL_MODELS = (User, ApiToken, UserSession)


class CredentialCache:
    """Principals by credential (its SHA-256, as stored), for one web process."""

    def __init__(self, max_age_seconds: float) -> None:
        # Under services/identity.py's TOUCH_EVERY (60 s): the use stamps stay within a minute or so. 0: off.
        self.max_age = max_age_seconds
        self._entries: dict[str, tuple[Principal, float, float]] = {}  # key → (principal, good until (epoch), filled)
        self.generation = 0  # bumped by every clear: a lookup that began under another generation is not kept
        self.listening = False
        self._lock = threading.Lock()  # lookups fill it from worker threads; clears come from any thread
        self.reconnect_seconds = RECONNECT_SECONDS
        self._task: asyncio.Task[None] | None = None
        _CACHES.add(self)

    def get(self, key: str) -> Principal | None:
        if not self.listening:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        principal, good_until, filled = entry
        if time.monotonic() - filled > self.max_age or time.time() >= good_until:
            self._entries.pop(key, None)
            return None
        return principal

    def put(self, key: str, principal: Principal, expires_at: datetime | None, generation: int) -> None:
        """Remember a principal looked up under `generation` (read before the lookup), unless something changed."""
        good_until = expires_at.timestamp() if expires_at is not None else float("inf")
        with self._lock:
            if not self.listening or generation != self.generation:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (principal, good_until, time.monotonic())

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def start(self, engine: Engine) -> None:
        if self.max_age > 0 and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._listen(engine))

    async def close(self) -> None:
        self._suspend()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _suspend(self) -> None:
        self.listening = False
        self.clear()

    async def _listen(self, engine: Engine) -> None:
        url = libpq_url(engine.url.render_as_string(hide_password=False))
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CREDENTIALS_CHANNEL}")
                    self.clear()  # what changed while no one listened is unknown
                    self.listening = True
                    async for _ in conn.notifies():
                        self.clear()
            except asyncio.CancelledError:
                self._suspend()
                raise
            except Exception as err:  # no database: every request asks it (and gets its 503) until it is back
                self._suspend()
                log.warning("credential listener lost its connection (%s); reconnecting", err)
                await asyncio.sleep(self.reconnect_seconds)
            self._suspend()


# Every cache of this process (tests build several apps): this process's own changes clear them all on commit.
_CACHES: weakref.WeakSet[CredentialCache] = weakref.WeakSet()
_CHANGED = "credentials_changed"


def _note_flush(session: Session, _flush: UOWTransaction) -> None:
    if any(isinstance(obj, CREDENTIAL_MODELS) for obj in (*session.dirty, *session.deleted)):
        session.info[_CHANGED] = True


def _note_statement(state: ORMExecuteState) -> None:
    if state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        if getattr(table, "name", None) in CREDENTIAL_TABLES:
            state.session.info[_CHANGED] = True


def _clear_on_commit(session: Session) -> None:
    if session.info.pop(_CHANGED, False):
        for cache in list(_CACHES):
            cache.clear()


def _forget_on_rollback(session: Session) -> None:
    session.info.pop(_CHANGED, None)


_LISTENERS: list[tuple[str, Callable[..., Any]]] = [
    ("after_flush", _note_flush),
    ("do_orm_execute", _note_statement),
    ("after_commit", _clear_on_commit),
    ("after_rollback", _forget_on_rollback),
]


def watch_own_changes() -> None:
    """Clear this process's caches when one of its sessions commits a change to a credential (idempotent)."""
    for name, listener in _LISTENERS:
        if not event.contains(Session, name, listener):
            event.listen(Session, name, listener)
