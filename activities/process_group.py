"""A command in a process group of its own: the tails of its output, a timeout, and killing the whole group (what
it started too) when it times out or the activity is cancelled."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from activities.heartbeat import beat

HEARTBEAT_SECONDS = 1.0
OUTPUT_TAIL = 16 * 1024  # bytes of stdout and of stderr kept (the end: errors come last)
KILL_GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL of the command's process group
PIPE_GRACE_SECONDS = 1.0  # output still collected after the command exits, from what it left running


class OutputTail:
    """The last OUTPUT_TAIL bytes of a stream, and how many it produced in all."""

    def __init__(self) -> None:
        self.kept = bytearray()
        self.total = 0

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        while stream is not None and (chunk := await stream.read(65536)):
            self.total += len(chunk)
            self.kept += chunk
            if len(self.kept) > 2 * OUTPUT_TAIL:
                del self.kept[:-OUTPUT_TAIL]

    @property
    def text(self) -> str:
        return bytes(self.kept[-OUTPUT_TAIL:]).decode("utf-8", errors="replace")


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed its user: still there
        return True
    return True


async def kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the command's whole process group (its own session), SIGKILL what is left after the grace."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while time.monotonic() < deadline and _group_alive(process.pid):
        await asyncio.sleep(0.1)
    if _group_alive(process.pid):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    await process.wait()


async def run_to_exit(
    process: asyncio.subprocess.Process, out: OutputTail, err: OutputTail, started: float, timeout: float
) -> bool:
    """Until the command exits or times out (then its group is killed), reading its output; True: timed out."""
    readers = {asyncio.create_task(out.drain(process.stdout)), asyncio.create_task(err.drain(process.stderr))}
    timed_out = False
    try:
        exited = asyncio.ensure_future(process.wait())
        while not exited.done():
            left = started + timeout - time.monotonic()
            if left <= 0:
                timed_out = True
                await kill_group(process)
                break
            await asyncio.wait({exited}, timeout=min(HEARTBEAT_SECONDS, left))
            beat({"pid": process.pid, "elapsed_s": round(time.monotonic() - started, 1)})
        await process.wait()
        _, still_open = await asyncio.wait(readers, timeout=PIPE_GRACE_SECONDS)
        if still_open:
            # Something it left running holds its output: stop reading and close our ends of the pipes
            # (asyncio offers no public way; the transport only closes pipes of a process that has exited).
            process._transport.close()  # type: ignore[attr-defined]
    except asyncio.CancelledError:
        await kill_group(process)  # the activity was cancelled (or timed out at Temporal): stop the command
        raise
    finally:
        for reader in readers:
            reader.cancel()
    return timed_out
