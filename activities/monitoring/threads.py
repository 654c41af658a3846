"""The monitor's own threads for its blocking database calls.

Not the event loop's default pool (`asyncio.to_thread`'s): every agent attempt and projection write in the worker
queues its database calls there, and in an incident storm that queue is seconds long. Loading a window, storing
results and reading a slow spell wait on nothing but their own.
"""

from __future__ import annotations

from core.threads import Threads

# A tick has at most a window load, a flush and a few skips or spell reads in flight at once; pruning runs beside it.
MONITOR_THREADS = Threads("monitor-db", 4)
in_monitor_thread = MONITOR_THREADS.run
