"""The incident page and its run graph for a big incident (issue 22): 2,000 messages and a 50-step run.

Seeds a private embedded Postgres directly (SQL and ORM inserts, not through the workflow: the pages only read
Postgres, and a finished run is read from its projection), then times warm GETs through the real app (in-process
ASGI, an admin's API token) — the server's time per request, no network:

    make bench            # or: python -m bench.incident_page --runs 40
Target: p95 ≤ 300 ms for /incidents/{id} and /incidents/{id}/run. Baselines in the same run: an empty incident's
page and a small incident (a 4-step run, 10 messages). Each partial of the incident page is timed on its own (what
a live event refreshes), so a slow page shows which part costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import httpx
from pydantic import SecretStr
from sqlalchemy import event, text
from sqlmodel import Session

from app.main import create_app
from bench.machine import machine_line
from core.audit import SYSTEM
from core.conversations import ContextSnapshot, ConversationMessage
from core.db import EmbeddedPostgres, make_engine, run_migrations, session_scope
from core.playbook import Playbook
from core.settings import Settings
from core.tables import AgentRun, Event, Incident, PlaybookVersion, WorkflowRun, WorkflowStep, utcnow
from services.identity import create_token, create_user
from web.pages.incidents import Part

TARGET_MS = 300.0
AGENTS = ["monitor", "investigate_logs", "investigate_metrics", "investigate_dependencies", "llm", "verify"]
WORDS = (
    "timeout database pool checkout latency upstream retries deploy rollback error rate p95 connection reset "
    "saturation queue backlog replica lag cache miss heap garbage collection restart health check"
).split()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def fifty_step_playbook(playbook_id: str, steps: int) -> Playbook:
    """Layers of five parallel steps, each depending on one or two of the layer above: joins everywhere."""
    rng = random.Random(5)
    defined: list[dict[str, Any]] = []
    for i in range(steps):
        layer, previous = i // 5, [s["id"] for s in defined if int(s["id"][1:]) // 5 == i // 5 - 1]
        deps = sorted(rng.sample(previous, k=min(len(previous), rng.randint(1, 2)))) if layer else []
        step: dict[str, Any] = {"id": f"s{i:02d}", "agent": AGENTS[i % len(AGENTS)], "depends_on": deps}
        if i % 11 == 7:
            step["when"] = f"steps.{deps[0]}.output.ok == false" if deps else None
        if i % 13 == 5:
            step["requires_approval"] = True
        defined.append({k: v for k, v in step.items() if v is not None})
    return Playbook.model_validate({"id": playbook_id, "version": 1, "name": "bench", "steps": defined})


def seed_incident(engine, *, title: str, messages: int, steps: int) -> int:
    """One incident with a finished run of `steps` steps and `messages` messages; its id. steps 0: no run."""
    rng = random.Random(title)
    start = utcnow() - timedelta(hours=2)
    with session_scope(engine) as session:
        incident = Incident(
            title=title, description="seeded by bench.incident_page", service="checkout", severity="P2",
            status="resolved" if steps else "open", incident_type="bench", playbook_id=f"bench-{steps}",
        )  # fmt: skip
        session.add(incident)
        session.flush()
        assert incident.id is not None
        if not steps:
            return incident.id
        workflow_id = f"incident-{incident.id}"
        incident.workflow_id = workflow_id
        playbook = fifty_step_playbook(f"bench-{steps}", steps)
        session.add(
            PlaybookVersion(
                playbook_id=playbook.id, version=1, name=playbook.name, incident_type="bench",
                definition=playbook.model_dump(mode="json"),
            )
        )  # fmt: skip
        session.add(
            WorkflowRun(
                workflow_id=workflow_id, incident_id=incident.id, playbook_id=playbook.id, playbook_version=1,
                status="completed", seq=10_000, started_at=start, finished_at=start + timedelta(minutes=9),
                changes=[{"at": start.isoformat(), "actor": "bench", "kind": "update_step_params",
                          "step_id": playbook.steps[-1].id, "params": {"note": "edited"}}],
            )
        )  # fmt: skip
        session.flush()
        for k, spec in enumerate(playbook.steps):
            began = start + timedelta(seconds=10 * k)
            skipped = spec.when is not None
            session.add(
                WorkflowStep(
                    workflow_id=workflow_id, step_id=spec.id, agent=spec.agent, position=k,
                    status="skipped" if skipped else "completed", attempt=1 + (k % 7 == 3), runs=1,
                    note=f"condition is false: {spec.when}" if skipped else None, seq=k + 1,
                    input={"params": {"window": "15m", "k": k}, "run": 1, "step_id": spec.id},
                    output=None if skipped else {
                        "ok": True, "summary": f"{spec.agent}: " + " ".join(rng.choices(WORDS, k=12)),
                        "findings": [{"title": f"finding {j}", "detail": " ".join(rng.choices(WORDS, k=20))}
                                     for j in range(3)],
                        "data": {"samples": [rng.random() for _ in range(20)]},
                    },
                    started_at=None if skipped else began, finished_at=began + timedelta(seconds=8),
                )
            )  # fmt: skip
            if not skipped:
                session.add(
                    AgentRun(
                        activity_key=f"{workflow_id}/{spec.id}/1", workflow_id=workflow_id, step_id=spec.id,
                        agent=spec.agent, attempt=1, status="succeeded", started_at=began,
                        finished_at=began + timedelta(seconds=8),
                    )
                )  # fmt: skip
                session.add(
                    ContextSnapshot(
                        activity_key=f"{workflow_id}/{spec.id}/1", workflow_id=workflow_id, incident_id=incident.id,
                        step_id=spec.id, agent=spec.agent, version=1, content_hash=f"{k:064d}", tokens=900,
                        context={"conversation": {"messages": [" ".join(rng.choices(WORDS, k=40))] * 10}},
                    )
                )  # fmt: skip
        for m in range(messages):
            spec = playbook.steps[m % steps]
            content = " ".join(rng.choices(WORDS, k=rng.randint(20, 90)))
            session.add(
                ConversationMessage(
                    incident_id=incident.id, workflow_id=workflow_id, step_id=spec.id, agent=spec.agent,
                    role="tool" if m % 4 == 3 else "assistant", content=content,
                    meta={"tokens": len(content) // 4}, created_at=start + timedelta(seconds=3 * m),
                )
            )  # fmt: skip
            session.add(
                Event(
                    kind="message.created", incident_id=incident.id, workflow_id=workflow_id, step_id=spec.id,
                    data={"actor": spec.agent}, at=start + timedelta(seconds=3 * m),
                )
            )  # fmt: skip
        return incident.id


async def time_get(client: httpx.AsyncClient, path: str, runs: int) -> tuple[list[float], int, list[float]]:
    """(wall ms per request, response bytes, this process's CPU ms per request) over warm runs. On a busy machine
    the wall time's tail is mostly waiting for a CPU; the CPU time (the app's Python, not Postgres) is steadier."""
    for _ in range(3):  # warm: plans, templates, caches
        (await client.get(path)).raise_for_status()
    samples, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        response = await client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
        response.raise_for_status()
    return samples, len(response.content), cpu


async def main(runs: int, messages: int, steps: int) -> int:
    async with AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="am-bench-page-")))
        postgres = EmbeddedPostgres(tmp)
        database_url = postgres.start()
        stack.callback(postgres.stop)  # the temporary directory and its server go at the end, whatever happens
        run_migrations(database_url)
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        began = time.perf_counter()
        big = seed_incident(engine, title="Checkout latency above SLO", messages=messages, steps=steps)
        small = seed_incident(engine, title="Small incident", messages=10, steps=4)
        empty = seed_incident(engine, title="Empty incident", messages=0, steps=0)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
        with Session(engine) as session:
            admin = create_user(session=session, actor=SYSTEM, username="bench", role="admin", password=None)
            token, _ = create_token(session=session, actor=SYSTEM, user=admin, name="bench")
            session.commit()
        print(
            f"seeded in {time.perf_counter() - began:.1f} s (direct inserts): incident #{big} with {messages} messages "
            f"and a {steps}-step finished run; #{small} with 10 messages and 4 steps; #{empty} empty"
        )
        settings = Settings(_env_file=None, database_url=SecretStr(database_url))  # type: ignore[call-arg]
        app = create_app(settings, engine=engine)  # no Temporal: a finished run is read from Postgres
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://bench",
                headers={"Authorization": f"Bearer {token}"},
            )
        )
        cases = [
            ("baseline: empty incident page", f"/incidents/{empty}", None),
            ("baseline: small incident page", f"/incidents/{small}", None),
            ("baseline: small incident run graph", f"/incidents/{small}/run", None),
            (f"incident page ({messages} msgs, {steps} steps)", f"/incidents/{big}", TARGET_MS),
            (f"run graph ({steps} steps)", f"/incidents/{big}/run", TARGET_MS),
            ("run graph partial (live refresh)", f"/incidents/{big}/run/graph", None),
            ("one step's detail (s25)", f"/incidents/{big}/run/steps/s25", None),
        ]
        print(f"{runs} warm GETs each, in-process ASGI (server time); ms; load average {os.getloadavg()[0]:.1f}")
        print(f"{'request':<44} {'p50':>7} {'p95':>7} {'cpu p50':>8} {'KiB':>6} {'SQL':>4}  target")
        missed = []
        for name, path, target in cases:
            samples, size, cpu = await time_get(client, path, runs)
            counter = [0]

            def bump(*_args: Any, counter: list[int] = counter) -> None:
                counter[0] += 1

            event.listen(engine, "before_cursor_execute", bump)
            (await client.get(path)).raise_for_status()
            event.remove(engine, "before_cursor_execute", bump)
            verdict = ""
            if target is not None:
                met = pct(samples, 95) <= target
                verdict = f"p95 ≤ {target:g} ms: {'met' if met else 'NOT met'}"
                if not met:
                    missed.append(name)
            print(
                f"{name:<44} {pct(samples, 50):7.1f} {pct(samples, 95):7.1f} {pct(cpu, 50):8.1f} {size / 1024:6.0f} "
                f"{counter[0]:4d}  "
                f"{verdict}"
            )
        print(f"\nwhere the incident page's time goes: each part alone, /incidents/{big}/partials/<part>")
        for part in get_args(Part):
            samples, size, cpu = await time_get(client, f"/incidents/{big}/partials/{part}", max(5, runs // 2))
            print(
                f"  {part:<16} p50 {pct(samples, 50):7.1f}  p95 {pct(samples, 95):7.1f}  cpu p50 {pct(cpu, 50):6.1f}"
                f"  {size / 1024:6.0f} KiB"
            )
        print("target met by every timed page" if not missed else f"target NOT met by: {', '.join(missed)}")
        return 0


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="timed GETs per page")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=50)
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)  # cleanup runs for `kill` as for Ctrl-C
    try:
        print(machine_line(), flush=True)
        sys.exit(asyncio.run(main(options.runs, options.messages, options.steps)))
    except KeyboardInterrupt:
        sys.exit(130)
