"""Named thread pools for blocking work that must not queue on the event loop's default pool.

`asyncio.to_thread` runs everything on one pool (6 threads on 2 CPUs), where every database call of a worker queues.
Work that waits long (a model's answer, a DNS lookup) or must keep its time (the monitor's) gets threads of its own,
so neither holds up the other's.
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


class Threads:
    """A pool of `size` threads named `name-N` (created as they are first needed)."""

    def __init__(self, name: str, size: int) -> None:
        self.size = size
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=name)

    async def run(self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """`asyncio.to_thread` on these threads (the caller's context variables go along, as there)."""
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)
