"""investigate_dependencies against real local HTTP servers and TCP sockets, concurrently, then in a real run."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
from sqlmodel import Session, select

from activities.base import AgentDeps
from activities.dependencies import InvestigateDependenciesAgent
from core.payloads import AgentInput, AgentResult, IncidentContext
from core.settings import Settings
from core.tables import AgentRun, WorkflowStep
from tests.factories import wait_for_workflow
from tests.peers import free_port, http_service, serving
from tests.workflows.test_engine import run_playbook, step


async def investigate(*dependencies: dict[str, Any], allow_loopback: bool = True, **params: Any) -> AgentResult:
    settings = Settings(_env_file=None, outbound_allow_loopback=allow_loopback)  # type: ignore[call-arg]
    async with httpx.AsyncClient() as http:
        agent = InvestigateDependenciesAgent(AgentDeps(http=http, settings=settings))
        return await agent.run(
            AgentInput(
                incident=IncidentContext(incident_id=1, title="checkout is failing", service="checkout", severity="P2"),
                workflow_id="incident-1",
                step_id="deps",
                params={"dependencies": list(dependencies), **params},
            )
        )


@contextmanager
def listening() -> Iterator[str]:
    """A real listening TCP socket on 127.0.0.1 (connects complete in the backlog): yields host:port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def slow_service(seconds: float) -> Iterator[str]:
    """An HTTP server that answers only after `seconds` (or when the test is done)."""
    done = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            done.wait(seconds)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with serving(Slow) as base:
        try:
            yield f"{base}/health"
        finally:
            done.set()


def test_the_spec_refuses_bad_params():
    spec = InvestigateDependenciesAgent.spec
    assert spec.params_problem({}) is None  # the registered service's dependencies then
    assert spec.params_problem({"dependencies": []}) == "params.dependencies: [] should be non-empty"
    assert spec.params_problem({"dependencies": [{"name": "db"}]}).startswith("params.dependencies.0:")
    both = {"name": "db", "url": "http://db", "tcp": "db:5432"}
    assert spec.params_problem({"dependencies": [both]}).startswith("params.dependencies.0:")
    assert spec.params_problem({"dependencies": [{"name": "db", "tcp": "db:99999"}]}).startswith(
        "params.dependencies.0.tcp:"
    )
    assert spec.params_problem({"dependencies": [{"name": "db", "tcp": "[::1]:5432"}]}) is None
    ok = [{"name": "db", "tcp": "db:5432"}]
    assert spec.params_problem({"dependencies": ok, "timeout_seconds": 61}).startswith("params.timeout_seconds:")


async def test_names_the_broken_dependencies_checking_all_at_once():
    with http_service() as (healthy, _), http_service() as (failing, failing_state), listening() as tcp:
        failing_state.status = 503
        with slow_service(10) as slow:
            started = time.monotonic()
            result = await investigate(
                {"name": "inventory", "url": healthy},
                {"name": "payments", "url": failing},
                {"name": "postgres", "tcp": f"127.0.0.1:{free_port()}"},
                {"name": "redis", "tcp": tcp},
                {"name": "search", "url": slow},
                timeout_seconds=1,
            )
            elapsed = time.monotonic() - started
    assert elapsed < 2  # one timeout, not the sum of them: the checks ran concurrently
    assert result.ok is False and result.resolved is None
    assert result.summary == (
        "3 of 5 dependencies broken: payments (HTTP 503), postgres (connection refused), search (no answer within 1s)"
    )
    assert result.data["broken"] == ["payments", "postgres", "search"]
    by_name = {d["name"]: d for d in result.data["dependencies"]}
    assert by_name["inventory"] | {"latency_ms": None} == {
        "name": "inventory",
        "kind": "http",
        "target": healthy,
        "healthy": True,
        "latency_ms": None,
        "error": None,
        "error_kind": None,
        "status_code": 200,
    }
    assert by_name["redis"]["healthy"] is True and by_name["redis"]["kind"] == "tcp"
    assert (by_name["payments"]["status_code"], by_name["payments"]["error_kind"]) == (503, "http_status")
    assert by_name["postgres"]["error_kind"] == "refused" and by_name["search"]["error_kind"] == "timeout"
    assert 900 <= by_name["search"]["latency_ms"] < 2000
    assert [(f["title"], f["severity"]) for f in result.findings] == [
        ("payments is broken", "error"),
        ("postgres is broken", "error"),
        ("search is broken", "error"),
    ]
    assert (
        result.findings[1]["detail"].startswith("TCP 127.0.0.1:")
        and "connection refused" in result.findings[1]["detail"]
    )


async def test_a_service_without_dependencies_is_not_a_negative_finding():
    result = await investigate()  # none given, and the registered service declares none
    assert result.ok is True and result.resolved is None and result.findings == []
    assert result.summary.startswith("no dependencies to check")
    assert result.data["configured"] is False


async def test_all_healthy():
    with http_service() as (healthy, _), listening() as tcp:
        result = await investigate({"name": "api", "url": healthy}, {"name": "db", "tcp": tcp})
    assert result.ok is True and result.findings == [] and result.data["broken"] == []
    assert result.summary.startswith("all 2 dependencies are healthy (slowest: ")


async def test_tcp_targets_pass_the_ssrf_policy():
    with listening() as tcp:
        result = await investigate(
            {"name": "metadata", "tcp": "169.254.169.254:80"},
            {"name": "local", "tcp": tcp},
            {"name": "by-name", "tcp": f"localhost:{tcp.rsplit(':', 1)[1]}"},
            {"name": "web", "url": "http://169.254.169.254/latest/meta-data/"},
            allow_loopback=False,
        )
    by_name = {d["name"]: d for d in result.data["dependencies"]}
    assert {d["error_kind"] for d in by_name.values()} == {"unsafe_target"}
    assert "169.254.169.254 is a link-local/cloud-metadata address" in by_name["metadata"]["error"]
    assert "127.0.0.1 is loopback: refused" in by_name["local"]["error"]
    assert by_name["by-name"]["error"].startswith("localhost resolves to ")
    assert "metadata address" in by_name["web"]["error"]
    assert {f["title"] for f in result.findings} == {f"{name} not checked" for name in by_name}
    assert {f["severity"] for f in result.findings} == {"warning"}


async def test_a_playbook_step_reports_the_broken_dependency(api, temporal_client, engine, worker, service):
    healthy, _ = service
    deps = [{"name": "inventory", "url": healthy}, {"name": "postgres", "tcp": f"127.0.0.1:{free_port()}"}]
    incident = await run_playbook(api, [step("deps", "investigate_dependencies", params={"dependencies": deps})])
    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    (deps_step,) = state.steps
    assert deps_step.status == "completed"
    assert deps_step.output["ok"] is False
    assert deps_step.output["summary"] == "1 of 2 dependencies broken: postgres (connection refused)"
    assert deps_step.output["data"]["broken"] == ["postgres"]
    with Session(engine) as session:
        (run,) = session.exec(select(AgentRun).where(AgentRun.workflow_id == incident["workflow_id"])).all()
        stored = session.exec(select(WorkflowStep).where(WorkflowStep.workflow_id == incident["workflow_id"])).one()
    assert (run.agent, run.status) == ("investigate_dependencies", "succeeded")
    assert stored.status == "completed" and stored.output["findings"][0]["title"] == "postgres is broken"


async def test_without_params_it_checks_the_registered_services_dependencies(api, temporal_client, worker, service):
    healthy, _ = service
    closed = free_port()
    registered = [
        {"name": "inventory", "check": {"type": "http", "url": healthy}},
        {"name": "postgres", "check": {"type": "tcp", "host": "127.0.0.1", "port": closed}},
        {"name": "resolver", "check": {"type": "dns", "name": "localhost"}},
        {"name": "checkout", "check": {"type": "http", "url": healthy},
         "dependencies": ["inventory", "postgres", "resolver"]},
    ]  # fmt: skip
    for body in registered:
        assert (await api.post("/api/services", json=body)).status_code == 201
    incident = await run_playbook(api, [step("deps", "investigate_dependencies")])  # its service is checkout
    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    (deps_step,) = state.steps
    assert deps_step.output["summary"] == "1 of 2 dependencies broken: postgres (connection refused)"
    assert deps_step.output["data"]["unchecked"] == ["resolver"]  # a DNS check is not a dependency check


async def test_bad_params_are_422_naming_the_step_and_field(api):
    bad = [{"name": "db", "tcp": "db"}]
    body = {
        "id": "bad-deps",
        "name": "bad",
        "steps": [step("deps", "investigate_dependencies", params={"dependencies": bad})],
    }
    response = await api.post("/api/playbooks", json=body)
    assert response.status_code == 422
    assert "step deps: params.dependencies.0.tcp: 'db' does not match" in response.json()["detail"]
