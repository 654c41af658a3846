"""The fault suite's stack: fault services as real processes, registered through the API with their log file,
metrics and dependency, a playbook (investigate logs, metrics, dependencies → an approved restart, unless a
dependency is broken → verify), and a worker running the real service monitor with short intervals, an allowlisted
restart command and LOG_ROOTS on the services' logs, in this process or (for the scenarios that kill it) as
`agent-monitor worker`. Used by tests/scenarios (from pytest's fixtures) and bench/scenarios.py (on
bench.local_stack)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import httpx
from sqlalchemy import Engine
from temporalio.client import Client

from core.commands import CommandRule
from core.services import ServiceBase
from core.settings import Settings
from tests.peers import free_port
from tests.scenarios import faultstate
from tests.scenarios.faultstate import ROOT
from tests.scenarios.promlite import Scraper, prometheus
from tests.scenarios.worker_process import WorkerProcess
from tests.workflows.test_monitoring import monitor_settings, monitoring

T = TypeVar("T")
PLAYBOOK_ID = "fault-recovery"
# Checks every second; two failures in a row open the incident (the minimum interval is 1 s).
CHECK = {"interval_seconds": 1, "timeout_seconds": 2, "failure_threshold": 2, "recovery_threshold": 1}
MONITOR_WINDOW_SECONDS = 2.0
# Generous: CI has two cores and the machine may be busy; polling returns as soon as the condition holds.
WAIT_SECONDS = 90.0
RESTART_WHEN = "size(steps.deps.output.data.broken) == 0"  # restart only a service whose dependencies answer
VERIFY_CHECKS = 10  # a second apart: verify passes at the first healthy check, fails after the last
# Runs whose fix failed wait for a person (the default is a day), so their incident's escalation policy runs.
RETRY_WINDOW_SECONDS = 600.0


@overload
async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = WAIT_SECONDS) -> T: ...
@overload
async def eventually(probe: Callable[[], T | None], what: str, timeout: float = WAIT_SECONDS) -> T: ...
async def eventually(probe: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> Any:
    """Poll until probe (a function or a coroutine function) answers something truthy; fail naming what did not
    happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass
class FaultProcess:
    """One fault service (tests/scenarios/faultservice.py) and the process the harness started for it."""

    name: str
    root: Path
    dependency: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def state_dir(self) -> Path:
        return self.root / "state" / self.name

    @property
    def log(self) -> Path:
        return self.root / "logs" / f"{self.name}.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return f"{self.base}/health"

    @property
    def starts(self) -> int:
        return faultstate.start_count(self.state_dir)

    @property
    def pid(self) -> int | None:
        """The pid of its latest start (restarted ones included)."""
        return faultstate.current_pid(self.state_dir)

    @property
    def running(self) -> bool:
        return faultstate.alive(self.pid)

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        argv = faultstate.serve_argv(self.port, self.log, self.state_dir, self.name, self.dependency)
        with open(self.state_dir / "service.out", "ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own service
                argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    async def healthy(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(self.health_url)).status_code == 200
        except httpx.HTTPError:
            return False

    async def fault(self, name: str, **params: Any) -> None:
        """Switch a fault on: through its HTTP control while it runs, else in its control file."""
        if not self.running:
            faultstate.set_fault(self.state_dir, name, params)
            return
        async with httpx.AsyncClient(timeout=5) as http:
            try:
                answer = await http.post(f"{self.base}/fault/{name}", json=params)
                answer.raise_for_status()
            except httpx.RemoteProtocolError:  # a crash/oom may end the process before the answer is read
                pass

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send the running service a signal (the process killed from outside); its pid."""
        pid = self.pid
        assert pid is not None and faultstate.alive(pid), f"{self.name} is not running"
        os.kill(pid, sig)
        return pid

    def first_exit(self, timeout: float = 30) -> int:
        """The exit status of the process the harness started (a restarted one is not its child)."""
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        faultstate.stop(self.state_dir, grace=2)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)


def restart_command(state_root: Path) -> tuple[list[str], CommandRule]:
    """The playbook's restart argv (per incident's service) and the COMMAND_ALLOWLIST entry that allows it."""
    program = [sys.executable, "-m", "tests.scenarios.faultservice", "restart", "--state-dir"]
    return [*program, f"{state_root}/${{incident.service}}"], CommandRule(
        argv=[*program, f"{{path:{state_root}}}"], cwd=str(ROOT)
    )


def playbook(argv: list[str]) -> dict[str, Any]:
    return {
        "id": PLAYBOOK_ID,
        "name": "Fault suite: investigate, restart after approval, verify",
        "incident_type": "service_down",
        "steps": [
            {"id": "monitor", "agent": "monitor"},
            {"id": "logs", "agent": "investigate_logs", "depends_on": ["monitor"], "params": {"window_minutes": 10}},
            {"id": "metrics", "agent": "investigate_metrics", "depends_on": ["monitor"]},
            {"id": "deps", "agent": "investigate_dependencies", "depends_on": ["monitor"]},
            # A service that fails through a broken dependency is not restarted: the dependency's incident is.
            {"id": "restart", "agent": "remediate_command", "depends_on": ["logs", "metrics", "deps"],
             "when": RESTART_WHEN, "requires_approval": True, "instructions": "restart ${incident.service}",
             "impact": "${incident.service} does not answer for about a second",
             "params": {"argv": argv, "cwd": str(ROOT), "timeout_seconds": 30}},
            {"id": "verify", "agent": "verify", "depends_on": ["restart"], "fail_on_negative": True,
             "repeat": {"count": VERIFY_CHECKS, "interval_seconds": 1}},
        ],
    }  # fmt: skip


def service_body(service: FaultProcess, dependencies: list[str]) -> dict[str, Any]:
    name = service.name
    return {
        "name": name,
        "description": "a fault service of the fault suite (tests/scenarios/faultservice.py)",
        "check": {"type": "http", "url": service.health_url},
        **CHECK,
        "dependencies": dependencies,
        "log_paths": [str(service.log)],
        "metrics_queries": [
            {"name": "up", "query": f'up{{job="{name}"}}', "threshold": 1, "op": "<"},
            {"name": "error_ratio", "query": f'http_error_ratio{{service="{name}"}}', "threshold": 0.05},
            {
                "name": "latency_p99",
                "query": f'http_request_duration_p99_seconds{{service="{name}"}}',
                "threshold": 1,
                "unit": "s",
            },
        ],
        "default_playbook": PLAYBOOK_ID,
    }


@dataclass
class ScenarioStack:
    """The running stack of one scenario: `shop`, which needs `shop-db`, both monitored."""

    temporal: Client
    engine: Engine
    settings: Settings  # the worker's
    admin: httpx.AsyncClient
    approver: httpx.AsyncClient
    root: Path
    scraper: Scraper
    services: dict[str, FaultProcess]
    worker: WorkerProcess | None = None  # when the worker runs as a process of its own (to be killed)

    async def service_state(self, name: str) -> dict[str, Any]:
        answer = await self.admin.get(f"/api/services/{name}")
        assert answer.status_code == 200, answer.text
        state: dict[str, Any] = answer.json()["state"]
        return state

    async def monitored_up(self, name: str) -> bool:
        """The monitor has seen it pass at least twice in a row."""
        state = await self.service_state(name)
        return bool(state["status"] == "up" and state["consecutive_passes"] >= 2)

    async def incidents(self, service: str) -> list[dict[str, Any]]:
        answer = await self.admin.get("/api/incidents", params={"service": service, "sort": "oldest"})
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    async def incident(self, incident_id: int) -> dict[str, Any]:
        answer = await self.admin.get(f"/api/incidents/{incident_id}")
        assert answer.status_code == 200, answer.text
        detail: dict[str, Any] = answer.json()
        return detail

    async def timeline(self, incident_id: int, kind: str = "incident.") -> list[dict[str, Any]]:
        """The incident's timeline entries whose kind starts with `kind` (its own, not its steps'), oldest first."""
        answer = await self.admin.get(f"/api/incidents/{incident_id}/timeline", params={"limit": 500})
        assert answer.status_code == 200, answer.text
        return [entry for entry in answer.json()["items"] if entry["kind"].startswith(kind)]

    async def incident_events(self, incident_id: int) -> list[str]:
        """The incident's own timeline entries, oldest first, one line each."""
        lines = []
        for entry in await self.timeline(incident_id):
            data = entry["data"]
            moved = f" → {data['status']}" if data.get("status") else ""
            if data.get("previous"):
                moved = f" {data['previous']}{moved}"
            if data.get("previous_severity"):
                moved += f" {data['previous_severity']} → {data['severity']}"
            lines.append(f"{entry['at'][11:23]} {entry['kind']}{moved} by {data.get('actor', '?')}")
        return lines

    async def pending_approval(self, incident_id: int) -> dict[str, Any] | None:
        answer = await self.approver.get("/api/approvals", params={"status": "pending", "incident_id": incident_id})
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items[0] if items else None

    async def approval(self, approval_id: int) -> dict[str, Any]:
        answer = await self.approver.get(f"/api/approvals/{approval_id}")
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    async def approve(self, approval_id: int, comment: str) -> None:
        decided = await self.approver.post(
            f"/api/approvals/{approval_id}/decision", json={"decision": "approve", "comment": comment}
        )
        assert decided.status_code == 200, decided.text

    async def workflow(self, workflow_id: str) -> dict[str, Any]:
        answer = await self.admin.get(f"/api/workflows/{workflow_id}")
        assert answer.status_code == 200, answer.text
        state: dict[str, Any] = answer.json()
        return state

    async def change_playbook(self, **steps: dict[str, Any]) -> None:
        """Store a new version of the playbook with these fields changed in its steps (step id → fields), as an
        admin would; incidents opened from now on run it."""
        answer = await self.admin.get(f"/api/playbooks/{PLAYBOOK_ID}")
        assert answer.status_code == 200, answer.text
        definition = {key: answer.json()[key] for key in ("id", "name", "incident_type", "steps")}
        definition["steps"] = [{**step, **steps.get(step["id"], {})} for step in definition["steps"]]
        stored = await self.admin.post("/api/playbooks", json=definition)
        assert stored.status_code == 201, stored.text

    async def escalation_policy(self, levels: list[dict[str, Any]], incident_type: str = "service_down") -> None:
        """The incident type's escalation policy (docs/monitoring.md, "Outcomes and escalation")."""
        saved = await self.admin.put(f"/api/incident-templates/{incident_type}", json={"escalation": levels})
        assert saved.status_code == 200, saved.text

    async def reconfigure(self, name: str, **changes: Any) -> None:
        """Change a service's registration through the API (PUT: the whole body, these fields changed)."""
        answer = await self.admin.get(f"/api/services/{name}")
        assert answer.status_code == 200, answer.text
        body = {key: value for key, value in answer.json().items() if key in ServiceBase.model_fields}
        replaced = await self.admin.put(f"/api/services/{name}", json={**body, **changes})
        assert replaced.status_code == 200, replaced.text


def _worker_settings(settings: Settings, root: Path, prometheus_url: str, rule: CommandRule) -> Settings:
    return monitor_settings(
        settings,
        monitor_window_seconds=MONITOR_WINDOW_SECONDS,
        log_roots=[root / "logs"],
        prometheus_url=prometheus_url,
        command_allowlist=[rule],
        command_timeout_seconds=30.0,
        retry_window_seconds=RETRY_WINDOW_SECONDS,
    )


@asynccontextmanager
async def _worker(
    temporal: Client, engine: Engine, settings: Settings, root: Path, process: bool
) -> AsyncIterator[WorkerProcess | None]:
    """The worker and its monitor: in this process, or (process=True) as `agent-monitor worker`."""
    if not process:
        async with monitoring(temporal, engine, settings):
            yield None
        return
    worker = WorkerProcess(settings, root / "worker.out")
    worker.start()
    try:
        yield worker
    finally:
        await worker.stop(temporal)


@asynccontextmanager
async def scenario_stack(
    temporal: Client, engine: Engine, settings: Settings, admin: httpx.AsyncClient, approver: httpx.AsyncClient,
    root: Path, *, worker_process: bool = False,
) -> AsyncIterator[ScenarioStack]:  # fmt: skip
    """Start shop-db and shop (which needs it), register both and the playbook, run the worker and its monitor
    (in this process, or as a process of its own); stop it all."""
    database = FaultProcess("shop-db", root)
    shop = FaultProcess("shop", root, dependency=database.health_url)
    services = {s.name: s for s in (database, shop)}
    scraper = Scraper({s.name: f"{s.base}/metrics" for s in services.values()})
    argv, rule = restart_command(root / "state")
    try:
        for service in services.values():
            service.start()
        for service in services.values():
            await eventually(service.healthy, f"{service.name} to answer", timeout=30)
        stored = await admin.post("/api/playbooks", json=playbook(argv))
        assert stored.status_code == 201, stored.text
        for service, needs in ((database, []), (shop, [database.name])):
            registered = await admin.post("/api/services", json=service_body(service, needs))
            assert registered.status_code == 201, registered.text
        with prometheus(scraper) as prometheus_url:
            worker_settings = _worker_settings(settings, root, prometheus_url, rule)
            async with _worker(temporal, engine, worker_settings, root, worker_process) as worker:
                yield ScenarioStack(temporal, engine, worker_settings, admin, approver, root, scraper, services, worker)
    finally:
        for service in services.values():
            service.stop()
