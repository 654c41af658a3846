"""The fault suite's scenarios (tests/scenarios) on a local stack, as a table: for each, how long from the fault
until the monitor opened the incident and until verify passed (approvals are given at once, through the API, where
the scenario approves), which agent named the cause, the action taken, and the side effects (restarts by the
service's start counter, incidents opened, reopens, escalations, what else the scenario checks). Each scenario runs
on a stack of its own: private Postgres, in-memory Temporal dev server, the app in-process, the real worker and
monitor (in this process, or as `agent-monitor worker` for the scenarios that kill it), and the fault services as
processes.

    make bench            # or: python -m bench.scenarios [--scenario process_killed …] [--rounds 3]
Targets: a fault a restart fixes is detected within 5 s and verified within 10 s, with one restart and one
incident; every scenario ends as its catalogue entry says (tests/scenarios/scenarios.py: SCENARIOS).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from pathlib import Path

import httpx

from app.main import create_app
from bench.local_stack import local_stack
from bench.machine import machine_line
from tests.factories import make_user
from tests.scenarios.harness import scenario_stack
from tests.scenarios.outcome import Outcome, table
from tests.scenarios.scenarios import SCENARIOS, verdict

TARGET_DETECTED_S = 5.0
TARGET_VERIFIED_S = 10.0


async def run_one(name: str) -> Outcome:
    async with local_stack("bench-scenarios", workflow_id_prefix=f"bs{uuid.uuid4().hex[:6]}-") as stack:
        app = create_app(stack.settings, engine=stack.engine, temporal=stack.env.client)
        _, admin_token = make_user(stack.engine, "admin", username="bench-admin")
        _, approver_token = make_user(stack.engine, "approver", username="bench-approver")
        transport = httpx.ASGITransport(app=app)

        def client(token: str) -> httpx.AsyncClient:
            headers = {"Authorization": f"Bearer {token}"}
            return httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers)

        with tempfile.TemporaryDirectory(prefix="am-bench-fault-") as tmp:
            async with client(admin_token) as admin, client(approver_token) as approver:
                scenario = SCENARIOS[name]
                async with scenario_stack(
                    stack.env.client, stack.engine, stack.settings, admin, approver, Path(tmp),
                    worker_process=scenario.worker_process,
                ) as running:  # fmt: skip
                    return await scenario.run(running)


def judged(name: str, outcome: Outcome) -> str:
    problems = verdict(SCENARIOS[name], outcome, TARGET_DETECTED_S, TARGET_VERIFIED_S)
    return "as expected" if not problems else "NOT as expected: " + "; ".join(problems)


async def main(names: list[str], rounds: int) -> None:
    outcomes = []
    for _ in range(rounds):
        for name in names:
            try:
                outcomes.append(await run_one(name))
            except (AssertionError, TimeoutError) as err:  # a step that never came: the row says which
                outcomes.append(Outcome(name, "", action=f"stopped: {err or type(err).__name__}"))
            print(f"{outcomes[-1].scenario}: {judged(name, outcomes[-1])}", flush=True)
    print()
    print(table(outcomes, width=90))
    targets = f"detected <= {TARGET_DETECTED_S:g} s, verified <= {TARGET_VERIFIED_S:g} s"
    print(f"\nTargets: {targets} (approvals given at once) for the faults a restart fixes, one restart and one")
    print("incident each; the others end as tests/scenarios/scenarios.py's SCENARIOS says.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="default: all of them")
    parser.add_argument("--rounds", type=int, default=1, help="times to run each scenario")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    asyncio.run(main(args.scenario or list(SCENARIOS), args.rounds))
    sys.stdout.flush()
    # A Client + Worker in a plain script can abort at interpreter exit (PyGILState_Release, DESIGN.md).
    os._exit(0)
