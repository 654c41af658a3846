"""The work a scaled-out stack (bench/procs.py) is given and what is read back, for bench/faults.py and tests/scale:
incidents opened through the API of several web processes, a playbook whose one side effect is a webhook to a
local receiver that counts deliveries per webhook-id, SSE clients on every web process recording what they see,
monitored services on the same receiver whose checks are counted, and the ledger of a round (completed, failed,
stuck, duplicated side effects, events missed) read from Postgres, Temporal and the receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
from temporalio.client import Client
from temporalio.service import RPCError

from core.converter import DATA_CONVERTER
from core.db import libpq_url

PLAYBOOK_ID = "scale-out"
TERMINAL = ("completed", "failed", "cancelled")


# ---- the local peer: the incidents' service, the monitored services, the remediation webhook -------------------


@dataclass
class Receiver:
    """GET /health: 200 (the incidents' service_url). GET /svc/<name>: a monitored service, each hit's time kept.
    POST /hook: remediate_webhook's request, counted per webhook-id (a receiver deduplicates on it)."""

    base: str = ""
    hook_delay: float = 0.0  # seconds before the webhook answers: remediations in flight when a worker dies
    hits: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    deliveries: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hits_between(self, name: str, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for at in self.hits[name] if start <= at < end)

    def webhook_ids(self) -> dict[str, list[str]]:
        """Workflow id → the distinct webhook-ids it sent (`<workflow id>:<step>:<attempt key>`)."""
        with self.lock:
            ids = list(self.deliveries)
        by_workflow: dict[str, list[str]] = defaultdict(list)
        for message_id in ids:
            by_workflow[message_id.split(":", 1)[0]].append(message_id)
        return by_workflow


class _Server(ThreadingHTTPServer):
    request_queue_size = 512  # a burst of webhooks and checks from several workers
    daemon_threads = True


@contextmanager
def receiver(hook_delay: float = 0.0) -> Iterator[Receiver]:
    state = Receiver(hook_delay=hook_delay)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the asker was killed meanwhile
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/svc/"):
                with state.lock:
                    state.hits[self.path[5:]].append(time.monotonic())
            self._answer(200, b'{"status": "ok"}')

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if state.hook_delay:
                time.sleep(state.hook_delay)
            with state.lock:
                state.deliveries[self.headers.get("webhook-id", "")] += 1
            self._answer(200, b'{"deployed": true}')

        def log_message(self, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# ---- set-up through the API --------------------------------------------------------------------------------------


def playbook(hook_url: str) -> dict[str, Any]:
    """Check the service, then one remediation webhook: the side effect that must happen once per incident."""
    return {
        "id": PLAYBOOK_ID,
        "name": "Scale-out: check, then one webhook",
        "incident_type": "scale_out",
        "steps": [
            {"id": "check", "agent": "monitor", "timeout_seconds": 30},
            {"id": "fix", "agent": "remediate_webhook", "depends_on": ["check"], "timeout_seconds": 30,
             "heartbeat_seconds": 10,
             "params": {"url": hook_url, "payload": {"incident": "${incident.id}"}, "timeout_seconds": 10}},
        ],
    }  # fmt: skip


async def set_up(base: str, token: str, peer: Receiver, services: tuple[str, ...] = (), interval: float = 2) -> None:
    """The playbook, a policy that pre-approves its webhook, and the monitored services."""
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as api:
        answer = await api.post("/api/playbooks", json=playbook(f"{peer.base}/hook"))
        assert answer.status_code == 201, answer.text
        policy = {"name": "scale-out webhook", "agent": "remediate_webhook", "max_risk": "high", "auto_approve": True}
        answer = await api.post("/api/approval-policies", json=policy)
        assert answer.status_code == 201, answer.text
        for name in services:
            body = {"check": {"type": "http", "url": f"{peer.base}/svc/{name}"}, "interval_seconds": interval,
                    "timeout_seconds": 2, "name": name}  # fmt: skip
            answer = await api.post("/api/services", json=body)
            assert answer.status_code == 201, answer.text


# ---- SSE clients -------------------------------------------------------------------------------------------------


class SseRecorder:
    """One client of GET /api/events/stream on one web process, as a browser is: it reconnects after a drop with
    Last-Event-ID. Keeps every event it got by id."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token
        self.seen: dict[int, dict[str, Any]] = {}
        self.last_id = 0
        self.connects = 0
        self.connected = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=60)) as http:
            while True:
                headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
                if self.last_id:
                    headers["Last-Event-ID"] = str(self.last_id)
                with contextlib.suppress(httpx.HTTPError, json.JSONDecodeError):
                    async with http.stream("GET", f"{self.base}/api/events/stream", headers=headers) as answer:
                        if answer.status_code == 200:
                            self.connects += 1
                            self.connected.set()
                            async for line in answer.aiter_lines():
                                if line.startswith("data:"):
                                    event = json.loads(line[5:])
                                    self.seen[event["id"]] = event
                                    self.last_id = max(self.last_id, event["id"])
                await asyncio.sleep(0.5)


# ---- opening incidents -------------------------------------------------------------------------------------------


@dataclass
class Opened:
    statuses: Counter[int] = field(default_factory=Counter)  # HTTP status per POST (0: no answer)
    ids: list[int] = field(default_factory=list)  # incidents the API answered 201 for

    @property
    def created(self) -> int:
        return len(self.ids)

    @property
    def refused(self) -> int:
        return sum(self.statuses.values()) - self.created


async def open_incidents(
    bases: list[str],
    token: str,
    count: int,
    *,
    service: str,
    service_url: str,
    concurrency: int = 8,
    rate: float | None = None,
    at: dict[int, Callable[[], Awaitable[None]]] | None = None,
) -> Opened:
    """POST count incidents, round-robin over the web processes, each once (no client retry: what is recorded
    must complete by itself), at most `rate` a second. `at[n]` runs (awaited, opening paused) when n incidents
    have been posted."""
    opened = Opened()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    gate = asyncio.Lock()
    posted = 0
    started = time.monotonic()

    async def post(api: httpx.AsyncClient, n: int) -> None:
        body = {"title": f"{service} #{n}", "service": service, "severity": "P3", "service_url": service_url,
                "incident_type": "scale_out", "playbook_id": PLAYBOOK_ID}  # fmt: skip
        try:
            answer = await api.post(f"{bases[n % len(bases)]}/api/incidents", json=body)
        except httpx.HTTPError:
            opened.statuses[0] += 1
            return
        opened.statuses[answer.status_code] += 1
        if answer.status_code == 201:
            opened.ids.append(answer.json()["id"])

    async def poster(api: httpx.AsyncClient) -> None:
        nonlocal posted
        while not queue.empty():
            async with gate:
                if at and posted in at:
                    await at.pop(posted)()
                n = queue.get_nowait() if not queue.empty() else None
                posted += 1
            if n is not None:
                if rate:
                    await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
                await post(api, n)

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as api:
        await asyncio.gather(*(poster(api) for _ in range(concurrency)))
    return opened


# ---- what happened -----------------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """A round's incidents as Postgres, Temporal and the receiver tell them."""

    recorded: dict[int, str | None]  # incident id → its workflow's projected status (None: no workflow row)
    runs: Counter[str]  # workflow id → IncidentWorkflow executions in Temporal
    temporal_status: dict[str, str]  # workflow id → the latest execution's status
    webhook_ids: dict[str, list[str]]  # workflow id → distinct webhook-ids received
    deliveries: int  # webhook requests received, re-sends under the same id included
    workflow_ids: dict[int, str]  # incident id → workflow id
    latencies: list[float] = field(default_factory=list)  # seconds from recorded to its workflow's end, sorted
    where: dict[str, str] = field(default_factory=dict)  # workflow id → where a stuck run stands (the first 10)

    def latency(self, fraction: float) -> float:
        """The latency below which `fraction` of the ended incidents are (1.0: the slowest)."""
        if not self.latencies:
            return 0.0
        return self.latencies[min(len(self.latencies) - 1, int(fraction * len(self.latencies)))]

    def count(self, status: str) -> int:
        return sum(1 for value in self.recorded.values() if value == status)

    @property
    def completed(self) -> int:
        return self.count("completed")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def stuck(self) -> list[int]:
        """Recorded incidents whose workflow never ended (or never started)."""
        return sorted(i for i, status in self.recorded.items() if status not in TERMINAL)

    @property
    def lost(self) -> int:
        return len(self.recorded) - self.completed

    @property
    def duplicated_runs(self) -> int:
        return sum(1 for runs in self.runs.values() if runs > 1)

    @property
    def duplicated_effects(self) -> int:
        """Incidents whose remediation reached the receiver under more than one webhook-id (acted twice)."""
        return sum(1 for wf in self.workflow_ids.values() if len(self.webhook_ids.get(wf, [])) > 1)

    @property
    def missing_effects(self) -> int:
        """Completed incidents whose remediation never reached the receiver."""
        return sum(
            1
            for incident, wf in self.workflow_ids.items()
            if self.recorded.get(incident) == "completed" and not self.webhook_ids.get(wf)
        )

    @property
    def resends(self) -> int:
        distinct = sum(len(self.webhook_ids.get(wf, [])) for wf in self.workflow_ids.values())
        return self.deliveries - distinct


def statuses(database_url: str, service: str) -> dict[int, str | None]:
    """Incident id → its workflow's projected status, for every incident recorded for `service`."""
    with psycopg.connect(libpq_url(database_url), autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT i.id, w.status FROM incidents i LEFT JOIN workflows w ON w.incident_id = i.id WHERE i.service = %s",
            (service,),
        ).fetchall()
    return {row[0]: row[1] for row in rows}


def pending(database_url: str, service: str) -> int | None:
    """Recorded incidents of `service` whose workflow has not ended; None while the database does not answer."""
    try:
        return sum(1 for status in statuses(database_url, service).values() if status not in TERMINAL)
    except psycopg.OperationalError:
        return None


async def drain(database_url: str, service: str, timeout: float) -> float:
    """Wait until every recorded incident of `service` has ended (or timeout); the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await asyncio.to_thread(pending, database_url, service) == 0:
            break
        await asyncio.sleep(1)
    return time.monotonic() - started


async def ledger(database_url: str, temporal_address: str, service: str, peer: Receiver) -> Ledger:
    recorded = await asyncio.to_thread(statuses, database_url, service)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        rows = conn.execute("SELECT id, workflow_id FROM incidents WHERE service = %s", (service,)).fetchall()
        latencies = conn.execute(
            "SELECT extract(epoch FROM w.finished_at - i.created_at)::float FROM workflows w "
            "JOIN incidents i ON i.id = w.incident_id WHERE i.service = %s AND w.finished_at IS NOT NULL ORDER BY 1",
            (service,),
        ).fetchall()
    workflow_ids = {row[0]: row[1] for row in rows if row[1]}
    client = await Client.connect(temporal_address, data_converter=DATA_CONVERTER)
    runs: Counter[str] = Counter()
    temporal_status: dict[str, str] = {}
    wanted = set(workflow_ids.values())
    async for execution in client.list_workflows('WorkflowType = "IncidentWorkflow"'):
        if execution.id in wanted:
            runs[execution.id] += 1
            if execution.status is not None:
                temporal_status.setdefault(execution.id, execution.status.name)
    stuck = [workflow_ids[i] for i, status in recorded.items() if status not in TERMINAL and i in workflow_ids]
    why = {wf: await _where(client, wf) for wf in stuck[:10]}
    with peer.lock:
        deliveries = sum(n for message_id, n in peer.deliveries.items() if message_id.split(":", 1)[0] in wanted)
    latency = [row[0] for row in latencies]
    return Ledger(recorded, runs, temporal_status, peer.webhook_ids(), deliveries, workflow_ids, latency, why)


async def _where(client: Client, workflow_id: str) -> str:
    """Where a run that did not end stands in Temporal: its status and pending activities with their last failure."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        return f"{workflow_id}: {err.status.name} ({err.message})"
    status = described.status.name if described.status else "?"
    pending = [
        f"{p.activity_type} attempt {p.attempt}: {p.last_failure.message if p.last_failure.message else 'no failure'}"
        for p in described.raw_description.pending_activities
    ]
    return f"{workflow_id}: {status}; pending: {pending or 'none'}"


def events_of(database_url: str, incidents: list[int]) -> dict[int, tuple[str, int]]:
    """Event id → (kind, incident id) of every event of these incidents."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, kind, incident_id FROM events WHERE incident_id = ANY(%s)", (incidents,)
        ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


async def missed_events(
    database_url: str, incidents: list[int], recorders: list[SseRecorder], settle: float = 10
) -> tuple[int, list[dict[int, tuple[str, int]]]]:
    """The number of events of these incidents and, per recorder, those it has not seen, after waiting up to
    `settle` s for them."""
    expected = await asyncio.to_thread(events_of, database_url, incidents)
    deadline = time.monotonic() + settle
    while True:
        missed = [{i: e for i, e in expected.items() if i not in rec.seen} for rec in recorders]
        if not any(missed) or time.monotonic() > deadline:
            return len(expected), missed
        await asyncio.sleep(0.5)
