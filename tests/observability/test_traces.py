"""One trace per incident: the API request that creates it, the workflow's start and run, each agent activity it
schedules and runs, and the agents' HTTP calls, all under the request's trace id. The app, its Temporal client and
the worker are wired as the composition roots wire them, with a tracer provider whose spans stay in memory (the
SDK's InMemorySpanExporter) instead of going out by OTLP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.main import create_app
from core.telemetry import Tracing
from core.temporal import connect
from tests.conftest import app_client
from tests.factories import incident_payload, make_user
from worker.runner import incident_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@contextlib.asynccontextmanager
async def _finally(undo: Callable[[], None]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        undo()


@pytest.fixture
def tracing(spans: InMemorySpanExporter) -> Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return Tracing(provider)


async def test_an_incident_is_one_trace_from_the_request_to_its_agents(settings, engine, tracing, spans, service):
    temporal = await connect(settings, tracing=tracing)
    app = create_app(settings, engine=engine, temporal=temporal, tracing=tracing)
    _, token = make_user(engine, "responder")
    url, _ = service
    # As the web's lifespan and `agent-monitor worker` do with their engine (this in-process client runs no
    # lifespan); removed after, since the test session shares this engine.
    untrace_engine = tracing.instrument_engine(engine)
    async with (
        incident_worker(temporal, engine, settings, task_queue=settings.task_queue, tracing=tracing),
        app_client(app, headers={"Authorization": f"Bearer {token}"}) as api,
        _finally(untrace_engine),
    ):
        created = await api.post("/api/incidents", json=incident_payload(service_url=url))
        assert created.status_code == 201, created.text
        workflow_id = created.json()["workflow_id"]
        await temporal.get_workflow_handle(workflow_id).result()  # healthy: it runs to the end

        # The last activity's span ends just after the workflow learns its result: wait for it.
        deadline = time.monotonic() + 30
        while not any(s.name == "RunActivity:verify" for s in spans.get_finished_spans()):
            assert time.monotonic() < deadline, [s.name for s in spans.get_finished_spans()]
            await asyncio.sleep(0.1)

    finished = spans.get_finished_spans()
    request = next(s for s in finished if s.kind == SpanKind.SERVER and s.name == "POST /api/incidents")
    trace = [s for s in finished if s.context.trace_id == request.context.trace_id]
    names = {s.name for s in trace}
    assert "StartWorkflow:IncidentWorkflow" in names
    assert "RunWorkflow:IncidentWorkflow" in names
    for agent in ("monitor", "investigate", "remediate", "verify"):
        assert f"StartActivity:{agent}" in names, sorted(names)
        assert f"RunActivity:{agent}" in names, sorted(names)
    # The monitor agent's health check is a span of its activity, and carried the trace to the service.
    monitor = next(s for s in trace if s.name == "RunActivity:monitor")
    checks = [
        s
        for s in trace
        if s.kind == SpanKind.CLIENT and s.parent.span_id == monitor.context.span_id and "db.system" not in s.attributes
    ]
    assert checks, "no HTTP span under the monitor agent's activity"
    method = checks[0].attributes.get("http.request.method") or checks[0].attributes.get("http.method")  # semconv
    assert method == "GET"
    # The database's statements are spans too, under the request and under the agents' activities; their text
    # carries no values (bound parameters), so nothing of an incident leaves the process through them.
    statements = [s for s in trace if s.attributes.get("db.system") == "postgresql"]
    assert any(s.parent.span_id == request.context.span_id for s in statements), "no statement under the request"
    activities = {s.context.span_id for s in trace if s.name.startswith("RunActivity:")}
    assert any(s.parent.span_id in activities for s in statements), "no statement under an agent's activity"
    title = incident_payload()["title"]
    assert not any(title in str(s.attributes.get("db.statement", "")) for s in statements)
    # Every span of the trace hangs, through its parents, from the request.
    by_id = {s.context.span_id: s for s in trace}
    for span in trace:
        root = span
        while root.parent is not None and root.parent.span_id in by_id:
            root = by_id[root.parent.span_id]
        assert root is request, f"{span.name} does not descend from the request"
