"""monitor and verify run the service's own check (params.check, the registered service's, or the incident URL's
GET) on real peers; investigate diagnoses what they saw; and a registered service's TCP check in a real run."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from activities.chain import ChainAgents, diagnose
from core.agents import BUILTIN_SPECS
from core.outbound import OutboundPolicy, guarded_async_client
from core.payloads import AgentInput, AgentResult, IncidentContext
from core.tables import AgentRun, WorkflowStep
from tests.factories import create_incident, wait_for_workflow
from tests.peers import free_port, http_service
from tests.peers_tls import Certificates, https_service, listening, make_certificates, trusting
from tests.workflows.test_engine import step

LOOPBACK = OutboundPolicy(allow_loopback=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def agent_input(
    service: dict[str, Any] | None = None, *, name: str = "checkout", url: str | None = None, **params: Any
) -> AgentInput:
    return AgentInput(
        incident=IncidentContext(incident_id=1, title="down", service=name, severity="P2", service_url=url),
        workflow_id="incident-1",
        step_id="monitor",
        params=params,
        context={"service": {"name": name, "timeout_seconds": 5, **service} if service else None},
    )


async def run(agent: str, input: AgentInput, http: httpx.AsyncClient | None = None) -> AgentResult:
    async with http or guarded_async_client(LOOPBACK) as client:
        agents = ChainAgents(client, check_timeout=2)
        return await getattr(agents, agent)(input)


async def test_monitor_runs_the_registered_services_tcp_check():
    with listening() as sock:
        port = sock.getsockname()[1]
        up = await run("monitor", agent_input({"check": {"type": "tcp", "host": "127.0.0.1", "port": port}}))
    down = await run("monitor", agent_input({"check": {"type": "tcp", "host": "127.0.0.1", "port": port}}))
    assert up.ok is True
    assert up.summary.startswith(f"checkout is up: 127.0.0.1:{port} accepts connections in ")
    assert up.data["source"] == "service" and up.data["check"]["status"] == "up" and up.findings == []
    assert down.ok is False
    assert down.summary == f"checkout is DOWN: connection refused (127.0.0.1:{port})"
    assert down.data["check"]["error_kind"] == "refused"
    assert down.findings == [
        {"title": "checkout is down", "detail": f"127.0.0.1:{port}: connection refused", "severity": "error"}
    ]


async def test_monitor_http_keyword_and_dns_from_the_service_definition():
    with http_service() as (url, state):
        state.body = b"maintenance page"
        missing = await run("monitor", agent_input({"check": {"type": "http", "url": url, "keyword": "ready"}}))
        legacy = await run("monitor", agent_input(url=url))  # no registered service: the incident's URL
    resolves = await run("monitor", agent_input({"check": {"type": "dns", "name": "localhost"}}, name="api"))
    assert missing.ok is False and missing.data["check"]["error_kind"] == "keyword"
    assert missing.summary == f"checkout is DOWN: HTTP 200 but the body lacks 'ready' ({url})"
    assert legacy.ok is True and legacy.data["source"] == "incident"
    assert legacy.summary.startswith("checkout is up: HTTP 200 in ")
    assert resolves.ok is True and resolves.summary.startswith("api is up: localhost resolves to 127.0.0.1 in ")


async def test_monitor_reports_a_certificate_about_to_expire_as_degraded(certificates):
    with https_service(certificates.expiring, certificates.key) as url:
        check = {"type": "http", "url": url, "tls_expiry_days": 14}
        monitored = await run("monitor", agent_input({"check": check}), trusting(certificates.ca))
        verified = await run("verify", agent_input({"check": check}), trusting(certificates.ca))
    assert monitored.ok is True  # degraded is healthy: nothing to remediate yet
    assert monitored.summary == "checkout is DEGRADED: certificate expires in 2 days"
    assert monitored.data["check"]["status"] == "degraded" and monitored.data["check"]["tls_days_left"] == 2
    assert monitored.findings[0]["title"] == "checkout's TLS certificate expires soon"
    assert verified.ok is True
    assert verified.summary == "verified: checkout answers HTTP 200, but its certificate expires in 2 days"


async def test_params_check_overrides_the_service_and_the_incident_url():
    with listening() as sock:
        port = sock.getsockname()[1]
        result = await run(
            "verify",
            agent_input(
                {"check": {"type": "dns", "name": "no-such.invalid"}},
                url=f"http://127.0.0.1:{free_port()}/health",
                check={"type": "tcp", "host": "127.0.0.1", "port": port},
            ),
        )
    assert result.ok is True and result.data["source"] == "params"
    assert result.summary == f"verified: checkout accepts connections on 127.0.0.1:{port}"


async def test_verify_failing_names_the_target_and_nothing_to_check_is_negative():
    failed = await run("verify", agent_input({"check": {"type": "dns", "name": "no-such.invalid"}}, name="api"))
    assert failed.ok is False
    assert failed.summary.startswith("verification failed: api still down (no-such.invalid does not resolve (A): ")
    assert failed.summary.endswith("; no-such.invalid)")
    nothing = await run("monitor", agent_input())
    assert nothing.ok is False and nothing.data == {"checked": False, "attempt": 1}


def test_investigate_diagnoses_the_new_kinds_of_failure():
    def seen(**check: Any) -> str:
        return diagnose({"healthy": False, "status_code": None, "body_excerpt": None, **check})[0]

    assert seen(kind="tcp", target="db:5432", error="connection refused", error_kind="refused") == (
        "nothing is listening on db:5432: the service process is down or not bound to its port"
    )
    assert "the DNS record points elsewhere" in seen(
        kind="dns", target="api", error="api resolves to 10.0.0.6, none of 10.0.0.5", error_kind="unexpected_answer"
    )
    assert seen(kind="dns", target="api.invalid", error="x", error_kind="dns").startswith(
        "api.invalid does not resolve"
    )
    keyword = seen(kind="http", status_code=200, error="HTTP 200 but the body lacks 'ok'", error_kind="keyword")
    assert keyword.startswith("the service answers HTTP 200 but not with the expected content")
    tls = seen(kind="http", error="TLS certificate rejected: certificate has expired", error_kind="tls")
    assert tls == "its TLS certificate is not accepted (TLS certificate rejected: certificate has expired): renew or " \
        "fix the certificate"  # fmt: skip
    degraded = diagnose({"healthy": True, "status": "degraded", "tls_days_left": 6, "kind": "http"})
    assert degraded == ("the service answers, but its TLS certificate expires in 6 days: renew it", True)
    old = diagnose({"healthy": False, "url": "http://x", "error": "connection refused", "error_kind": "refused"})
    assert old[0].startswith("nothing is listening:")  # outputs recorded before checks had a kind


def test_the_specs_refuse_a_bad_check_and_keep_other_params():
    for name in ("monitor", "verify"):
        spec = BUILTIN_SPECS[name]
        assert spec.params_problem({"check": {"type": "tcp", "host": "db", "port": 70000}}) == (
            "params.check.port: 70000 is greater than the maximum of 65535"
        )
        assert spec.params_problem({"check": {"type": "smtp"}}).startswith("params.check.type:")
        assert spec.params_problem({"check": {"type": "http", "url": "http://x", "bogus": 1}}).startswith(
            "params.check: Additional properties are not allowed"
        )
        assert spec.params_problem({"check": {"type": "dns", "name": "api", "expect": ["10.0.0.5"]}}) is None
        assert spec.params_problem({"anything": "else"}) is None


async def test_a_bad_check_in_a_playbook_is_a_422_naming_the_step_and_field(api):
    body = {
        "id": "bad-check",
        "name": "bad",
        "steps": [step("watch", "monitor", params={"check": {"type": "tcp", "host": "db", "port": 0}})],
    }
    response = await api.post("/api/playbooks", json=body)
    assert response.status_code == 422
    assert "step watch: params.check.port: 0 is less than the minimum of 1" in response.json()["detail"]


async def open_incident(api, service: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    incident_type = f"t-{uuid.uuid4().hex[:10]}"
    body = {"id": incident_type, "name": "test", "incident_type": incident_type, "steps": steps}
    stored = await api.post("/api/playbooks", json=body)
    assert stored.status_code == 201, stored.text
    return await create_incident(api, incident_type=incident_type, service=service)


def recorded(engine, workflow_id: str) -> tuple[list[AgentRun], list[WorkflowStep]]:
    with Session(engine) as session:
        runs = session.exec(select(AgentRun).where(AgentRun.workflow_id == workflow_id)).all()
        steps = session.exec(select(WorkflowStep).where(WorkflowStep.workflow_id == workflow_id)).all()
    return list(runs), list(steps)


@pytest.mark.usefixtures("worker")
async def test_a_registered_tcp_service_is_monitored_in_a_real_run(api, temporal_client, engine):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    check = {"type": "tcp", "host": "127.0.0.1", "port": port}
    registered = await api.post("/api/services", json={"name": "postgres", "check": check, "timeout_seconds": 3})
    assert registered.status_code == 201, registered.text
    try:
        incident = await open_incident(
            api, "postgres", [step("monitor", "monitor"), step("verify", "verify", "monitor")]
        )
        outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    finally:
        sock.close()
    assert outcome == "completed"
    monitor, verify = state.steps
    assert monitor.status == "completed" and monitor.output["ok"] is True
    assert monitor.output["summary"].startswith(f"postgres is up: 127.0.0.1:{port} accepts connections in ")
    assert monitor.output["data"]["source"] == "service" and monitor.output["data"]["check"]["kind"] == "tcp"
    assert verify.output["summary"] == f"verified: postgres accepts connections on 127.0.0.1:{port}"
    runs, steps = recorded(engine, incident["workflow_id"])
    assert sorted((r.agent, r.status) for r in runs) == [("monitor", "succeeded"), ("verify", "succeeded")]
    assert {s.step_id: s.output["ok"] for s in steps} == {"monitor": True, "verify": True}

    # The socket is closed: the same service, a new incident, and monitor says it is down, naming the target.
    incident = await open_incident(api, "postgres", [step("monitor", "monitor")])
    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    (monitor,) = state.steps
    assert monitor.status == "completed" and monitor.output["ok"] is False  # a finding, not a failure
    assert monitor.output["summary"] == f"postgres is DOWN: connection refused (127.0.0.1:{port})"
    assert monitor.output["data"]["check"]["target"] == f"127.0.0.1:{port}"
    assert monitor.output["data"]["check"]["error_kind"] == "refused"
    runs, (stored,) = recorded(engine, incident["workflow_id"])
    assert [(r.agent, r.status) for r in runs] == [("monitor", "succeeded")]
    assert stored.output["findings"][0]["detail"] == f"127.0.0.1:{port}: connection refused"
    assert outcome == "completed"
