"""Issue 20, finding 3: an agent attempt tells our database being unavailable (INFRASTRUCTURE_UNAVAILABLE, which
the workflow waits out) from the agent's own failure (retried under the step's policy, as before)."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.runs import AgentRunLog, database_down
from core.db import make_engine
from core.payloads import INFRASTRUCTURE_UNAVAILABLE, AgentInput, AgentResult, IncidentContext


def _input() -> AgentInput:
    incident = IncidentContext(incident_id=1, title="checkout errors", service="checkout", severity="P2")
    return AgentInput(incident=incident, workflow_id="incident-infra", step_id="diagnose")


@pytest.mark.parametrize(
    "err",
    [
        psycopg.OperationalError("connection failed: No such file or directory"),  # no SQLSTATE: not there
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),  # 57P01
        psycopg.errors.TooManyConnections("sorry, too many clients already"),  # 53300
        SAOperationalError("SELECT 1", {}, psycopg.OperationalError("server closed the connection unexpectedly")),
        PoolTimeout("QueuePool limit of size 5 overflow 10 reached"),
    ],
    ids=["refused", "shutdown", "too-many-clients", "wrapped", "pool-timeout"],
)
def test_our_database_being_unavailable_is_infrastructure(err):
    assert database_down(err)


@pytest.mark.parametrize(
    "err",
    [
        psycopg.errors.DeadlockDetected("deadlock detected"),  # 40P01: an ordinary, retryable failure
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),  # 57014
        psycopg.errors.UniqueViolation("duplicate key"),
        RuntimeError("the service under investigation answered 500"),
    ],
    ids=["deadlock", "statement-timeout", "constraint", "agent"],
)
def test_other_failures_stay_the_agents(err):
    assert database_down(err) is None


async def test_an_attempt_whose_database_is_gone_raises_infrastructure_unavailable(tmp_path):
    engine = make_engine(f"postgresql+psycopg://postgres:@/postgres?host={tmp_path}")  # nothing listens there
    ran: list[str] = []

    async def agent() -> AgentResult:
        ran.append("diagnose")
        return AgentResult(ok=True, summary="fine")

    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(AgentRunLog(engine).around, "diagnose", _input(), agent)
    err = raised.value
    assert err.type == INFRASTRUCTURE_UNAVAILABLE and not err.non_retryable  # the run's retry policy decides
    assert err.message.startswith("Postgres unavailable: connection")
    what, why, run_key = err.details
    assert what == "Postgres" and why in err.message and run_key.endswith("/1")  # the attempt's agent_runs key
    assert ran == ["diagnose"]  # it ran; its end could not be recorded, so it runs again when Postgres is back
    engine.dispose()


async def test_an_agents_own_failure_is_not_infrastructure(engine):
    async def agent() -> AgentResult:
        raise RuntimeError("the service answered 500")

    with pytest.raises(RuntimeError):
        await ActivityEnvironment().run(AgentRunLog(engine).around, "diagnose", _input(), agent)


async def test_a_webhook_agents_registration_read_against_a_gone_database_is_infrastructure_too(tmp_path):
    """The webhook agent reads its registration before its attempt is recorded: that read failing for our database
    is not the agent's failure either (it spent the step's attempts)."""
    import httpx

    from activities.webhook_agent import WebhookAgentActivities

    engine = make_engine(f"postgresql+psycopg://postgres:@/postgres?host={tmp_path}")  # nothing listens there
    async with httpx.AsyncClient() as http:
        activities = WebhookAgentActivities(engine, http, AgentRunLog(engine))
        with pytest.raises(ApplicationError) as raised:
            await ActivityEnvironment().run(activities.webhook_agent, _input())
    assert raised.value.type == INFRASTRUCTURE_UNAVAILABLE and raised.value.message.startswith("Postgres unavailable")
