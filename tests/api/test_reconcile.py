"""No orphan incidents (issue 20, finding 4): an incident recorded while Temporal could not start its workflow gets
it by itself once Temporal is back, from the worker's reconciler, once — even with two workers reconciling.

"Temporal down" is a Temporal client whose dev server was shut down: the API's start fails after its RPC timeout and
answers 503, as it does for a Temporal killed under a running web process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from app.main import create_app
from core.tables import Incident, IncidentCreate, WorkflowRun
from services.incidents.lifecycle import transition
from services.incidents.open import insert_incident
from services.incidents.reconcile import RECONCILE_GRACE, Reconciler, Round
from tests.conftest import app_client, start_dev_server
from tests.factories import TEST_ACTOR, create_incident, incident_payload, make_user, wait_for_workflow
from worker.runner import incident_worker, reconciling

RECONCILE_LOG = "services.incidents.reconcile"


@pytest.fixture
async def dead_temporal() -> Client:
    """A client of a Temporal that has gone away (its dev server shut down after the client connected)."""
    env = await start_dev_server()
    await env.shutdown()
    return env.client


def reconciled(outcome: str) -> float:
    return REGISTRY.get_sample_value("agent_monitor_incidents_reconciled_total", {"outcome": outcome}) or 0.0


def age(engine, *incident_ids: int, by: timedelta = RECONCILE_GRACE * 2) -> None:
    """Make incidents look recorded `by` ago (past the reconciler's grace for a start in flight)."""
    with Session(engine) as session:
        session.execute(
            text(
                "UPDATE incidents SET created_at = created_at - :by, updated_at = updated_at - :by WHERE id = ANY(:ids)"
            ),
            {"by": by, "ids": list(incident_ids)},
        )
        session.commit()


def record(engine, settings, **overrides) -> Incident:
    """An incident row as the opener stores it before it starts the workflow (as if that start had failed)."""
    with Session(engine, expire_on_commit=False) as session:
        incident, created = insert_incident(
            session=session,
            data=IncidentCreate(**incident_payload(**overrides)),
            idempotency_key=None,
            actor=TEST_ACTOR,
            settings=settings,
        )
    assert created
    return incident


async def in_temporal(client: Client, workflow_id: str) -> int:
    """How many runs Temporal holds under the workflow id (visibility catches up within a moment)."""
    for _ in range(50):
        runs = [run async for run in client.list_workflows(f'WorkflowId = "{workflow_id}"')]
        if runs:
            return len(runs)
        await asyncio.sleep(0.1)
    return 0


async def until_settled(engine, *, deadline: float) -> set[str]:
    """Wait until every incident's workflow has ended (its projection says so); their statuses."""
    until = time.monotonic() + deadline
    while True:
        with Session(engine) as session:
            runs = session.exec(select(WorkflowRun)).all()
            total = len(session.exec(select(Incident.id)).all())
        statuses = {run.status for run in runs}
        if len(runs) == total and statuses <= {"completed", "failed", "cancelled"} or time.monotonic() > until:
            return statuses
        await asyncio.sleep(0.2)


async def test_incidents_recorded_while_temporal_was_down_get_their_workflow_once_it_is_back(
    dead_temporal, temporal_client, engine, settings, service, caplog
):
    """20 incidents opened without an Idempotency-Key while Temporal is down are answered 503 and stay recorded;
    the worker's reconciler finds Temporal down too and waits; once Temporal is back, two workers' reconcilers
    start every one of them exactly once and they all complete, with no client retry."""
    caplog.set_level(logging.INFO, logger=RECONCILE_LOG)
    url, _ = service
    settings = settings.model_copy(update={"reconcile_interval_seconds": 1.0})
    _, token = make_user(engine, "responder")
    app = create_app(settings, engine=engine, temporal=dead_temporal)
    async with app_client(app, headers={"Authorization": f"Bearer {token}"}) as api:
        answers = await asyncio.gather(
            *[
                api.post("/api/incidents", json=incident_payload(title=f"outage {n}", service_url=url))
                for n in range(20)
            ]
        )
    assert [answer.status_code for answer in answers] == [503] * 20, [answer.text for answer in answers]
    with Session(engine) as session:
        incidents = session.exec(select(Incident).order_by(Incident.id)).all()
    assert len(incidents) == 20 and {incident.status for incident in incidents} == {"open"}
    last = max(incident.updated_at for incident in incidents)
    details = [answer.json()["detail"] for answer in answers]
    assert {int(detail.split()[1]) for detail in details} == {incident.id for incident in incidents}
    assert all(" is recorded but its workflow could not start yet (" in detail for detail in details), details[0]
    assert all("it will start by itself when Temporal is back" in detail for detail in details), details[0]

    # Temporal still down for the worker too: the round says so and changes nothing.
    await asyncio.sleep(max(0.0, (last + RECONCILE_GRACE).timestamp() - time.time()) + 0.5)
    down = await Reconciler(engine=engine, temporal=dead_temporal, settings=settings).reconcile()
    assert down.unavailable is not None and not down.started and down.candidates == 20
    with Session(engine) as session:
        assert session.exec(select(WorkflowRun)).all() == []

    # Temporal is back: a worker runs the workflows, two reconcilers race to start them.
    before = reconciled("started")
    started = time.monotonic()
    async with (
        incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue),
        reconciling(temporal_client, engine, settings),
        reconciling(temporal_client, engine, settings),
    ):
        statuses = await until_settled(engine, deadline=120)
    took = time.monotonic() - started
    assert statuses == {"completed"}, statuses
    assert took < 60, took
    lines = [r.getMessage() for r in caplog.records if r.name == RECONCILE_LOG and "started workflow" in r.message]
    assert len(lines) == 20 and reconciled("started") - before == 20  # one start each, by one of the two
    assert {line[: line.rindex(" (")] for line in lines} == {
        f"started workflow {incident.workflow_id} for incident {incident.id}, recorded while Temporal was unavailable"
        for incident in incidents
    }
    for incident in incidents:
        assert await in_temporal(temporal_client, incident.workflow_id) == 1
    with Session(engine) as session:
        assert {i.status for i in session.exec(select(Incident)).all()} == {"resolved"}
        assert {i.workflow_runs for i in session.exec(select(Incident)).all()} == {1}
        assert {run.status for run in session.exec(select(WorkflowRun)).all()} == {"completed"}


async def terminate(client: Client, *workflow_ids: str) -> None:
    """Runs no worker of this test will run: ended, so they do not wait on the shared server."""
    for workflow_id in workflow_ids:
        await client.get_workflow_handle(workflow_id).terminate("test over")


async def test_a_round_starts_old_orphans_only_not_ended_or_just_recorded_incidents(temporal_client, engine, settings):
    """Resolved incidents are left alone, and so is one recorded moments ago (its opener's start may be in flight);
    an old orphan is started, and so is one a person moved to in_progress without its run ever starting."""
    orphan = record(engine, settings, title="orphan")
    worked_on = record(engine, settings, title="in progress by hand")
    resolved = record(engine, settings, title="resolved by hand")
    for incident, target in ((worked_on, "in_progress"), (resolved, "resolved")):
        assert incident.id is not None
        transition(engine=engine, incident_id=incident.id, target=target, comment="", actor=TEST_ACTOR,
                   settings=settings)  # fmt: skip
    age(engine, orphan.id, worked_on.id, resolved.id)
    recent = record(engine, settings, title="just recorded")

    result = await Reconciler(engine=engine, temporal=temporal_client, settings=settings).reconcile()
    try:
        assert result.unavailable is None and result.candidates == 2
        assert sorted(result.started) == sorted([orphan.workflow_id, worked_on.workflow_id])
        for incident in (orphan, worked_on):
            assert await in_temporal(temporal_client, incident.workflow_id) == 1
        for incident in (resolved, recent):
            with pytest.raises(RPCError) as err:
                await temporal_client.get_workflow_handle(incident.workflow_id).describe()
            assert err.value.status == RPCStatusCode.NOT_FOUND
        with Session(engine) as session:
            marks = {run.workflow_id: (run.status, run.seq) for run in session.exec(select(WorkflowRun)).all()}
        assert marks == {orphan.workflow_id: ("pending", -1), worked_on.workflow_id: ("pending", -1)}
        again = await Reconciler(engine=engine, temporal=temporal_client, settings=settings).reconcile()
        assert again.candidates == 0
    finally:
        await terminate(temporal_client, *result.started)


async def test_two_reconcilers_at_once_start_each_orphan_once(temporal_client, engine, settings):
    orphans = [record(engine, settings, title=f"orphan {n}") for n in range(8)]
    age(engine, *(incident.id for incident in orphans))
    one = Reconciler(engine=engine, temporal=temporal_client, settings=settings)
    other = Reconciler(engine=engine, temporal=temporal_client, settings=settings)
    first, second = await asyncio.gather(one.reconcile(), other.reconcile())
    try:
        assert not set(first.started) & set(second.started)
        assert sorted(first.started + second.started) == sorted(incident.workflow_id for incident in orphans)
        for incident in orphans:
            assert await in_temporal(temporal_client, incident.workflow_id) == 1
    finally:
        await terminate(temporal_client, *first.started, *second.started)


class StaleClaim(Reconciler):
    """A reconciler whose claim statement took its snapshot before another reconciler's start committed and locked
    the row after that one let go of it (CI saw this once in 20 orphans): its claim does not see the other's mark."""

    @staticmethod
    def _claim(session, orphan):
        return session.exec(
            select(Incident).where(Incident.id == orphan.incident_id).with_for_update(of=Incident)
        ).one()


async def test_a_claim_that_raced_a_committed_start_neither_starts_nor_reports_it(temporal_client, engine, settings):
    incident = record(engine, settings, title="raced")
    age(engine, incident.id)
    late = StaleClaim(engine=engine, temporal=temporal_client, settings=settings)
    [orphan] = [o for o in late._orphans(datetime.now(UTC) - RECONCILE_GRACE) if o.incident_id == incident.id]
    with Session(engine) as other:  # the other reconciler's mark, committed (its start went with it)
        Reconciler._mark(other, orphan)
        other.commit()
    before, result = reconciled("started"), Round()
    await late._settle(orphan, result)
    assert result.started == [] and reconciled("started") == before
    with pytest.raises(RPCError) as err:  # the run is the other reconciler's to start: not started a second time
        await temporal_client.get_workflow_handle(orphan.workflow_id).describe()
    assert err.value.status == RPCStatusCode.NOT_FOUND


async def test_a_run_already_in_temporal_is_not_started_again_and_its_projection_takes_over(
    api, temporal_client, engine, settings, service
):
    """Its opener's start went through but no worker has run it yet (no workflows row): the reconciler asks Temporal
    once, marks it pending, and the run's own projection then writes over the mark as it goes."""
    url, _ = service
    incident = await create_incident(api, service_url=url)
    age(engine, incident["id"])
    result = await Reconciler(engine=engine, temporal=temporal_client, settings=settings).reconcile()
    assert result.found == [incident["workflow_id"]] and result.started == []
    with Session(engine) as session:
        mark = session.get(WorkflowRun, incident["workflow_id"])
        assert mark is not None and (mark.status, mark.seq) == ("pending", -1)
    assert (await Reconciler(engine=engine, temporal=temporal_client, settings=settings).reconcile()).candidates == 0
    assert (await api.get(f"/api/incidents/{incident['id']}")).json()["workflow"]["status"] == "pending"

    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        outcome, _ = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    assert await in_temporal(temporal_client, incident["workflow_id"]) == 1
    with Session(engine) as session:
        run = session.get(WorkflowRun, incident["workflow_id"])
        assert run is not None and run.status == "completed" and run.seq > 0
        stored = session.get(Incident, incident["id"])
        assert stored is not None and stored.status == "resolved"


async def test_a_reopen_whose_new_run_did_not_start_gets_it(api, temporal_client, engine, settings, service, caplog):
    """A reopen → restart moves the incident to its next run before it starts it: when that start fails (Temporal
    down), the reconciler starts `<id>-run2`."""
    caplog.set_level(logging.INFO, logger=RECONCILE_LOG)
    url, _ = service
    async with incident_worker(temporal_client, engine, settings, task_queue=settings.task_queue):
        incident = await create_incident(api, service_url=url)
        assert (await wait_for_workflow(temporal_client, incident["workflow_id"]))[0] == "completed"
        # What a reopen stores before it starts the new run, which Temporal then refused.
        moved = transition(engine=engine, incident_id=incident["id"], target="reopened", comment="it is back",
                           actor=TEST_ACTOR, settings=settings)  # fmt: skip
        assert moved.incident.workflow_id == f"{incident['workflow_id']}-run2"
        age(engine, incident["id"])
        result = await Reconciler(engine=engine, temporal=temporal_client, settings=settings).reconcile()
        assert result.started == [moved.incident.workflow_id]
        assert (await wait_for_workflow(temporal_client, moved.incident.workflow_id))[0] == "completed"
    assert any(
        r.getMessage().startswith(
            f"started workflow {moved.incident.workflow_id} for incident {incident['id']}, reopened while Temporal "
            "was unavailable"
        )
        for r in caplog.records
    )


async def test_reconciling_is_off_at_zero(temporal_client, engine, settings):
    off = settings.model_copy(update={"reconcile_interval_seconds": 0})
    async with reconciling(temporal_client, engine, off) as task:
        assert task is None
    async with reconciling(temporal_client, engine, settings) as task:
        assert task is not None and not task.done()
    assert task.cancelled()


async def test_a_workflow_id_held_by_older_history_is_refused_once_and_left_for_a_person(
    temporal_client, engine, settings, caplog
):
    """The id belongs to a run that predates the incident (another database's history under the same prefix): the
    reconciler does not adopt it, says so once, and does not ask again at every round."""
    incident = record(engine, settings, title="collides")
    assert incident.workflow_id is not None
    foreign = await temporal_client.start_workflow("ForeignWorkflow", id=incident.workflow_id, task_queue="nobody")
    with Session(engine) as session:
        session.execute(
            text(
                "UPDATE incidents SET created_at = now() + interval '1 minute', updated_at = now() - :by WHERE id = :id"
            ),
            {"by": RECONCILE_GRACE * 2, "id": incident.id},
        )
        session.commit()
    reconciler = Reconciler(engine=engine, temporal=temporal_client, settings=settings)
    before = reconciled("refused")
    try:
        first = await reconciler.reconcile()
        assert first.refused == [incident.workflow_id] and not first.started and not first.found
        assert reconciled("refused") - before == 1
        assert any("predates the incident" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
        assert (await reconciler.reconcile()).candidates == 0
        with Session(engine) as session:
            assert session.get(WorkflowRun, incident.workflow_id) is None
    finally:
        await foreign.terminate("test over")
