"""Tracing on only with OTEL_EXPORTER_OTLP_ENDPOINT, and LOG_FORMAT=json lines that carry the trace."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from app.main import create_app
from core.settings import Settings
from core.telemetry import JsonFormatter, Tracing, traces_url


def make_settings(**values) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_tracing_is_off_without_an_endpoint():
    off = Tracing.from_settings(make_settings(), "agent-monitor-web")
    assert not off.enabled and off.temporal_interceptors() == []
    off.shutdown()  # nothing to flush
    app = create_app(make_settings())
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
