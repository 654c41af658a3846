"""SIGKILL the worker process mid-DAG; a new worker finishes the incident without re-running completed steps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.factories import wait_for_workflow
from tests.workflows.test_engine import run_playbook, runs, sleep, step, wait_until


def start_worker(settings) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "TASK_QUEUE": settings.task_queue,
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], env=env)


async def test_killed_worker_mid_dag_then_a_new_one_completes(api, temporal_client, engine, settings):
    first = start_worker(settings)
    second = None
    try:
        incident = await run_playbook(
            api, [step("before"), sleep("slow", 4, "before", heartbeat_seconds=1), step("after", "noop", "slow")]
        )
        workflow_id = incident["workflow_id"]
        await wait_until(lambda: "slow" in runs(engine, workflow_id), timeout=60, what="the slow step to start")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = start_worker(settings)
        outcome, state = await wait_for_workflow(temporal_client, workflow_id)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(20)

    assert outcome == "completed"
    assert {s.step_id: s.status for s in state.steps} == {
        "before": "completed",
        "slow": "completed",
        "after": "completed",
    }
    ran = runs(engine, workflow_id)
    assert len(ran["before"]) == 1 and len(ran["after"]) == 1  # completed steps never ran again
    assert len(ran["slow"]) == 2  # the killed attempt, then the one the new worker ran
    assert ran["slow"][0].attempt == 1 and ran["slow"][1].attempt == 2
    assert ran["slow"][1].status == "succeeded"
