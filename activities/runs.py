"""agent_runs: one row per agent activity attempt — what ran, on which worker, how it ended.

Written outside the agent's own code, so every agent is counted the same way; the dashboard's
"running agents" and the tests' "ran exactly once" both read it.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, update
from sqlalchemy.dialects.postgresql import insert
from temporalio import activity

from core.db import session_scope
from core.tables import AgentRun, utcnow

WORKER = f"{socket.gethostname()}"[:200]
R = TypeVar("R")


class AgentRunLog:
    def __init__(self, engine: Engine | None) -> None:
        self._engine = engine

    def _start(self, key: str, workflow_id: str, step_id: str, agent: str, attempt: int) -> None:
        assert self._engine is not None
        table = AgentRun.__table__  # type: ignore[attr-defined]
        with session_scope(self._engine) as session:
            session.execute(
                insert(table)
                .values(
                    activity_key=key,
                    workflow_id=workflow_id,
                    step_id=step_id,
                    agent=agent,
                    attempt=attempt,
                    worker=WORKER,
                    status="running",
                    started_at=utcnow(),
                )
                .on_conflict_do_nothing(constraint="uq_agent_runs_activity_key")
            )

    def _finish(self, key: str, status: str, error: str | None) -> None:
        assert self._engine is not None
        table = AgentRun.__table__  # type: ignore[attr-defined]
        with session_scope(self._engine) as session:
            session.execute(
                update(table)
                .where(table.c.activity_key == key)
                .values(status=status, error=(error or "")[:2000] or None, finished_at=utcnow())
            )

    async def around(self, agent: str, input: Any, call: Callable[[], Awaitable[R]]) -> R:
        if self._engine is None:
            return await call()
        info = activity.info()
        key = f"{info.workflow_run_id}/{info.activity_id}/{info.attempt}"
        await asyncio.to_thread(self._start, key, info.workflow_id or "", input.step_id, agent, info.attempt)
        try:
            result = await call()
        except BaseException as err:  # also cancellation: the row must not stay "running"
            await asyncio.shield(asyncio.to_thread(self._finish, key, "failed", f"{type(err).__name__}: {err}"))
            raise
        await asyncio.to_thread(self._finish, key, "succeeded", None)
        return result


def recorded(name: str) -> Callable[[Callable[..., Awaitable[R]]], Callable[..., Awaitable[R]]]:
    """Decorate an agent method (on a class with `self.runs: AgentRunLog`) so each attempt is logged."""

    def decorate(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        @functools.wraps(method)
        async def wrapper(self: Any, input: Any) -> R:
            return await self.runs.around(name, input, lambda: method(self, input))

        return wrapper

    return decorate
