"""Heartbeats for agents that wait on something slow (a subprocess, an HTTP call, a thread), so the step's
heartbeat timeout notices a dead worker but not a slow answer. Agents also run outside an activity (tests call
`run` directly): then these do nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from temporalio import activity

T = TypeVar("T")


def beat(*details: Any) -> None:
    if activity.in_activity():
        activity.heartbeat(*details)


def attempt() -> int:
    return activity.info().attempt if activity.in_activity() else 1


def interval() -> float:
    """How often to heartbeat: a third of the activity's heartbeat timeout, at most once a second."""
    info = activity.info() if activity.in_activity() else None
    return min(info.heartbeat_timeout.total_seconds() / 3, 1.0) if info and info.heartbeat_timeout else 1.0


async def heartbeating(work: Awaitable[T], *details: Any) -> T:
    """Await work, heartbeating meanwhile; cancelling this cancels the work (a thread's call runs on to its end,
    its result unread)."""
    task = asyncio.ensure_future(work)
    try:
        while not (await asyncio.wait({task}, timeout=interval()))[0]:
            beat(*details)
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
