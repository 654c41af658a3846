"""A worker for the bare baseline workflows in a process of its own, as `agent-monitor worker` runs ours, so a
benchmark compares like with like (a worker sharing the timing client's process and event loop has longer
tails).

    python -m bench.bare_worker --address HOST:PORT --task-queue Q   # prints "ready", stops on SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from temporalio.client import Client
from temporalio.worker import Worker

from bench.baseline import BareChainWorkflow, BareUpdateWorkflow, bare_noop
from bench.local_stack import stop_process
from cli.common import leave
from worker.runner import tune_gc


async def _serve(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    workflows = [BareChainWorkflow, BareUpdateWorkflow]
    async with Worker(client, task_queue=task_queue, workflows=workflows, activities=[bare_noop]):
        print("ready", flush=True)
        await stop.wait()


@contextmanager
def bare_worker(address: str, task_queue: str) -> Iterator[None]:
    """Run the bare worker as a child process for the duration of the block, once it polls."""
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_worker", "--address", address, "--task-queue", task_queue],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the bare worker did not start (exit {child.wait(10)})")
        yield
    finally:
        stop_process(child)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args()
    tune_gc()  # as the incident worker does
    asyncio.run(_serve(args.address, args.task_queue))
    leave(0)


if __name__ == "__main__":
    main()
