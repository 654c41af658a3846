"""A real local server speaking the Prometheus HTTP API (https://prometheus.io/docs/prometheus/latest/querying/api/):
GET /api/v1/query and /api/v1/query_range answer the series a test defines for each query string, in the JSON
Prometheus sends (values as strings, "NaN" and "+Inf" included; errors as status/errorType/error)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.peers import serving

Value = float | int | str  # a str as Prometheus writes it: "NaN", "+Inf", "-Inf"
# A series: its labels and either one value or its points over a range, oldest first (an instant query answers
# the newest; a range query puts the newest at the last step and the earlier ones before it).
Series = tuple[dict[str, str], Value | list[Value]]
MAX_POINTS = 11_000  # Prometheus refuses ranges of more points per series


@dataclass
class Request:
    path: str
    params: dict[str, str]


@dataclass
class PrometheusState:
    """What the server answers and what it was asked."""

    series: dict[str, list[Series]] = field(default_factory=dict)  # query → its series (resultType vector/matrix)
    scalars: dict[str, Value] = field(default_factory=dict)  # query → a scalar result (e.g. "vector(1) > bool 0")
    requests: list[Request] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    delay: float = 0.0
    # Answer every request with this error instead: (HTTP status, errorType, error), e.g. (503, "unavailable", …).
    fail: tuple[int, str, str] | None = None

    @property
    def queries(self) -> list[str]:
        return [r.params.get("query", "") for r in self.requests]


def prom_value(value: Value) -> str:
    """A sample value as Prometheus formats it (Go's strconv.FormatFloat(v, 'f', -1, 64)): "12.5", "310"."""
    if isinstance(value, str):
        return value
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    text = format(Decimal(repr(number)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


class BadData(Exception):
    pass


def _time(params: dict[str, str], name: str, default: float | None = None) -> float:
    if name not in params:
        if default is None:
            raise BadData(f'invalid parameter "{name}": cannot parse "" to a valid timestamp')
        return default
    try:
        return float(params[name])
    except ValueError:
        raise BadData(f'invalid parameter "{name}": cannot parse "{params[name]}" to a valid timestamp') from None


def _answer(state: PrometheusState, path: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
    query = params.get("query")
    if not query:
        raise BadData('invalid parameter "query": unknown position: parse error: no expression found in input')
    if query not in state.series and query not in state.scalars:
        raise BadData(f'invalid parameter "query": 1:1: parse error: unexpected character in {query[:40]!r}')
    if path == "/api/v1/query":
        at = _time(params, "time", time.time())
        if query in state.scalars:
            return 200, {"resultType": "scalar", "result": [at, prom_value(state.scalars[query])]}
        result = [
            {"metric": labels, "value": [at, prom_value(points[-1] if isinstance(points, list) else points)]}
            for labels, points in state.series[query]
        ]
        return 200, {"resultType": "vector", "result": result}
    start, end = _time(params, "start"), _time(params, "end")
    try:
        step = float(params.get("step", ""))
    except ValueError:
        raise BadData(
            f'invalid parameter "step": cannot parse "{params.get("step", "")}" to a valid duration'
        ) from None
    if step <= 0:
        raise BadData("zero or negative query resolution step widths are not accepted. Try a positive integer")
    if end < start:
        raise BadData('invalid parameter "end": end timestamp must not be before start time')
    if (end - start) / step > MAX_POINTS:
        raise BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. "
            "Try decreasing the query resolution (?step=XX)"
        )
    stamps = [start + i * step for i in range(int((end - start) // step) + 1)]
    if query in state.scalars:  # a scalar over a range is one series without labels
        series: list[Series] = [({}, state.scalars[query])]
    else:
        series = state.series[query]
    result = []
    for labels, points in series:
        values = points if isinstance(points, list) else [points] * len(stamps)
        values = values[-len(stamps) :]
        placed = stamps[len(stamps) - len(values) :]
        result.append({"metric": labels, "values": [[t, prom_value(v)] for t, v in zip(placed, values, strict=True)]})
    return 200, {"resultType": "matrix", "result": result}


@contextmanager
def prometheus_api() -> Iterator[tuple[str, PrometheusState]]:
    """Serve the Prometheus HTTP API on 127.0.0.1; yields (base URL, state)."""
    state = PrometheusState()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            state.requests.append(Request(parts.path, params))
            if state.delay:
                time.sleep(state.delay)
            if parts.path not in ("/api/v1/query", "/api/v1/query_range"):
                return self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")
            if state.fail is not None:
                status, kind, error = state.fail
                return self._json(status, {"status": "error", "errorType": kind, "error": error})
            try:
                status, data = _answer(state, parts.path, params)
            except BadData as err:
                return self._json(400, {"status": "error", "errorType": "bad_data", "error": str(err)})
            body: dict[str, Any] = {"status": "success", "data": data}
            if state.warnings:
                body["warnings"] = state.warnings
            return self._json(status, body)

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (the timeout tests)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as base:
        yield base, state
