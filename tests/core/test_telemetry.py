"""Tracing on only with OTEL_EXPORTER_OTLP_ENDPOINT, and LOG_FORMAT=json lines that carry the trace."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from app.main import create_app
from core.settings import Settings
from core.telemetry import JsonFormatter, Tracing, traces_url
from tests.peers import serving


def make_settings(**values) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_tracing_is_off_without_an_endpoint():
    unset = make_settings(otel_exporter_otlp_endpoint="")  # whatever the shell running the tests says
    off = Tracing.from_settings(unset, "agent-monitor-web")
    assert not off.enabled and off.temporal_interceptors() == []
    off.shutdown()  # nothing to flush
    app = create_app(unset)
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)


def test_the_endpoint_is_the_collectors_base_url():
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("https://otel.example/") == "https://otel.example/v1/traces"


def record(message: str, **extra) -> logging.LogRecord:
    made = logging.getLogger("agent_monitor.test").makeRecord(
        "agent_monitor.test", logging.WARNING, __file__, 1, message, (), None, extra=extra
    )
    return made


def test_json_lines_carry_the_current_trace():
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        line = json.loads(JsonFormatter().format(record("step %s failed", temporal_activity={"activity_type": "x"})))
    context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert line["level"] == "WARNING" and line["logger"] == "agent_monitor.test"
    assert line["temporal_activity"] == {"activity_type": "x"}
    outside = json.loads(JsonFormatter().format(record("no span")))
    assert "trace_id" not in outside and outside["message"] == "no span"


def test_json_lines_keep_the_exception():
    try:
        raise ValueError("boom")
    except ValueError:
        made = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(JsonFormatter().format(made))
    assert "ValueError: boom" in line["exception"]


def test_log_format_json_configures_the_root_logger(tmp_path: Path):
    program = (
        "import logging; from core.settings import Settings; "
        "Settings(_env_file=None, log_format='json').configure_logging(); "
        "logging.getLogger('agent_monitor').warning('hello %s', 'world')"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, cwd=Path.cwd(), check=True
    )
    line = json.loads(done.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello world" and line["logger"] == "agent_monitor"
    plain = program.replace(", log_format='json'", "")
    done = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True, timeout=60, check=True)
    assert "WARNING agent_monitor: hello world" in done.stderr


def test_spans_go_by_otlp_to_the_endpoint():
    """On: a span reaches a real HTTP server at <endpoint>/v1/traces as OTLP protobuf (in a process of its own: the
    provider becomes the process's global one)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[tuple[str, str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    program = (
        "from core.settings import Settings; from core.telemetry import Tracing; "
        "t = Tracing.from_settings(Settings(_env_file=None), 'agent-monitor-test'); "
        "t.provider.get_tracer('t').start_span('checked').end(); t.shutdown()"
    )
    with serving(Collector) as url:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": url}
        subprocess.run([sys.executable, "-c", program], env=env, timeout=60, check=True)
    assert [(path, kind) for path, kind, _ in received] == [("/v1/traces", "application/x-protobuf")]
    sent = ExportTraceServiceRequest.FromString(received[0][2])
    (resource,) = sent.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
    assert service == "agent-monitor-test"
    assert [s.name for scope in resource.scope_spans for s in scope.spans] == ["checked"]
