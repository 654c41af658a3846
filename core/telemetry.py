"""Traces, and log lines that carry them.

Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT is set: spans go by OTLP (HTTP/protobuf, `<endpoint>/v1/traces`) in
batches. Off, nothing is instrumented at all (no interceptor, no middleware, no span objects): the cost is a
falsy check at start-up. One trace follows an incident: the API request (FastAPI's span), the workflow's start, the
workflow, each activity it schedules and each activity's run (temporalio's TracingInterceptor carries the context in
Temporal headers), and the agents' outbound HTTP calls (httpx). The composition roots (app/main.py, the worker
command) build one Tracing per process and hand it to what they wire; tests hand in their own provider.

LOG_FORMAT=json writes one JSON object per log line, with the current trace and span ids and the Temporal
workflow or activity the line comes from (core/settings.py configure_logging).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from temporalio.contrib.opentelemetry import TracingInterceptor

from core.db import trace_driver_statements

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from core.settings import Settings

TRACER_NAME = "agent-monitor"
_global_set = False


class Tracing:
    """One process's tracing: a provider when on, None when off (every method is then a no-op)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self._engine_tracers: list[Any] = []  # the instrumentation's listeners on our engines

    @classmethod
    def from_settings(cls, settings: Settings, service: str) -> Tracing:
        """From OTEL_EXPORTER_OTLP_ENDPOINT; the service's name is OTEL_SERVICE_NAME or `service`."""
        return cls.from_endpoint(settings.otel_exporter_otlp_endpoint, settings.otel_service_name or service)

    @classmethod
    def from_endpoint(cls, endpoint: str, service: str) -> Tracing:
        """On when `endpoint` (OTEL_EXPORTER_OTLP_ENDPOINT, the collector's base URL) is set; also made the
        process's global provider, so libraries that use the global one join the same traces. The exporter reads
        the other OTEL_EXPORTER_OTLP_* variables (headers, timeout, certificates) from the environment itself."""
        if not endpoint:
            return cls()
        # Imported only when on: the exporter pulls in requests and protobuf.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
        global _global_set
        if not _global_set:  # the SDK refuses a second global provider, with a warning
            trace.set_tracer_provider(provider)
            _global_set = True
        return cls(provider)

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def temporal_interceptors(self) -> list[TracingInterceptor]:
        """For the Temporal client; workers built on that client take them too (spans of workflows, activities)."""
        if self.provider is None:
            return []
        return [TracingInterceptor(self.provider.get_tracer(TRACER_NAME))]

    def instrument_http(self, client: httpx.AsyncClient) -> None:
        """Spans for an httpx client's requests (health checks, webhooks, LLM calls), with the context sent on."""
        if self.provider is None:
            return
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def instrument_engine(self, engine: Engine) -> Callable[[], None]:
        """Spans for the engine's statements (SQL text without parameters: no values leave the process), children
        of the request's or the activity's span. Returns what removes them again (also done at shutdown)."""
        if self.provider is None:
            return lambda: None
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # The instrumentation declares SQLAlchemy < 2.1 and would do nothing on ours; its engine events are the same
        # in 2.1 (tests/observability/test_traces.py checks the spans). One instrumented engine per process at a time.
        tracer = SQLAlchemyInstrumentor().instrument(
            engine=engine,
            tracer_provider=self.provider,
            enable_commenter=False,
            enable_attribute_commenter=False,
            skip_dep_check=True,
        )
        if tracer is None:
            return lambda: None
        self._engine_tracers.append(tracer)
        trace_driver_statements(self.provider.get_tracer(TRACER_NAME))  # autocommit_rows, below SQLAlchemy

        def remove() -> None:
            if tracer in self._engine_tracers:
                self._engine_tracers.remove(tracer)
                tracer.remove_all_event_listeners()
                SQLAlchemyInstrumentor().uninstrument()
                trace_driver_statements(None)

        return remove

    def shutdown(self) -> None:
        """Send what is still batched (at most a few seconds) and stop."""
        if self._engine_tracers:
            from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

            for tracer in self._engine_tracers:
                tracer.remove_all_event_listeners()
            SQLAlchemyInstrumentor().uninstrument()
            trace_driver_statements(None)
        self._engine_tracers.clear()  # an engine kept (tests share one) must not trace into a dead provider
        if self.provider is not None:
            self.provider.shutdown()


def traces_url(endpoint: str) -> str:
    """OTEL_EXPORTER_OTLP_ENDPOINT is the collector's base URL: traces go to its /v1/traces (the OTLP spec)."""
    return f"{endpoint.rstrip('/')}/v1/traces"


# Attributes every LogRecord has: what is left over came in `extra=` (but uvicorn's terminal-coloured copy).
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the current span's trace_id and span_id (when
    tracing), the exception, and whatever the call passed in `extra` (temporalio's loggers pass the workflow's or
    the activity's ids under temporal_workflow / temporal_activity)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = format(context.trace_id, "032x")
            line["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in line:
                line[key] = value
        return json.dumps(line, default=str, ensure_ascii=False)
