"""The monitor's own threads for its blocking database calls.

Not the event loop's default pool (`asyncio.to_thread`'s): every agent attempt and projection write in the worker
queues its database calls there, and in an incident storm that queue is seconds long. Loading a window, storing
results and reading a slow spell wait on nothing but their own.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

# A tick has at most a window load, a flush and a few skips or spell reads in flight at once; pruning runs beside it.
MONITOR_THREADS = 4

_threads = ThreadPoolExecutor(max_workers=MONITOR_THREADS, thread_name_prefix="monitor-db")


async def in_monitor_thread(func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """`asyncio.to_thread` on the monitor's threads (the caller's context variables go along, as there)."""
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_threads, call)
