"""The worker process's metrics endpoints: ours (core/metrics.py's registry and the database pool) on
WORKER_METRICS_HOST:WORKER_METRICS_PORT, and the Temporal SDK's own (task latencies, poller and slot counts, sticky
cache, request failures) on TEMPORAL_METRICS_PORT, served by temporalio's Runtime. Either is off at port 0.

Several workers on one machine need a port each. METRICS_TOKEN, when set, guards ours as it guards the web's; the
SDK's endpoint takes no credentials: it is bound to WORKER_METRICS_HOST (127.0.0.1 by default) as well.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from sqlalchemy import Engine
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from core.metrics import PoolCollector, scrape_allowed
from core.settings import Settings

log = logging.getLogger(__name__)


def temporal_runtime(settings: Settings) -> Runtime | None:
    """A Temporal Runtime serving the SDK's metrics on TEMPORAL_METRICS_PORT (None: the default runtime, no endpoint).
    Durations in seconds and counters ending in _total, as Prometheus names them."""
    if not settings.temporal_metrics_port:
        return None
    address = f"{settings.worker_metrics_host}:{settings.temporal_metrics_port}"
    config = PrometheusConfig(
        bind_address=address, counters_total_suffix=True, unit_suffix=True, durations_as_seconds=True
    )
    return Runtime(telemetry=TelemetryConfig(metrics=config))


def worker_registry(engine: Engine) -> CollectorRegistry:
    """What the worker's endpoint serves: the process's metrics and its database pool."""
    registry = CollectorRegistry()
    registry.register(REGISTRY)  # a registry is a collector too
    registry.register(PoolCollector(engine))
    return registry


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def guarded(app: WsgiApp, token: str) -> WsgiApp:
    """The app behind `Authorization: Bearer <token>` (no token: open)."""

    def check(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not scrape_allowed(environ.get("HTTP_AUTHORIZATION", ""), token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"METRICS_TOKEN required\n"]
        return app(environ, start_response)

    return check


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        """Scrapes every few seconds are not news."""


@contextmanager
def serve_metrics(settings: Settings, engine: Engine) -> Iterator[int | None]:
    """Serve /metrics on WORKER_METRICS_HOST:WORKER_METRICS_PORT in a thread while the block runs; yields the port
    (None: off)."""
    if not settings.worker_metrics_port:
        yield None
        return
    app = guarded(make_wsgi_app(worker_registry(engine)), settings.metrics_token.get_secret_value())
    server = make_server(
        settings.worker_metrics_host, settings.worker_metrics_port, app, ThreadingWSGIServer, handler_class=_Quiet
    )
    thread = threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True)
    thread.start()
    log.info("worker metrics on http://%s:%d/metrics", settings.worker_metrics_host, server.server_port)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
