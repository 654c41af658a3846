"""GET /metrics: the web process's Prometheus metrics (docs/operations.md, "Metrics").

What this process recorded (core/metrics.py), its database pool and live streams, and what the database says at
scrape time in two index-backed queries: the incidents not ended (open, in_progress, reopened — resolved and closed
grow without bound and are left out) by status and severity, and the approvals waiting for a person. Every process
reports the same database figures: aggregate them with max(), not sum(). Answers are cached for CACHE_SECONDS so
several Prometheus servers scraping cost one round of queries.

Open like /healthz unless METRICS_TOKEN is set; then `Authorization: Bearer <METRICS_TOKEN>`. Nothing here names an
incident, a service, a person or a secret.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any, get_args

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text

from api.auth import public
from core.metrics import PoolCollector, scrape_allowed
from core.tables import ENDED_STATUSES, INCIDENT_TRANSITIONS, Severity

log = logging.getLogger(__name__)

router = APIRouter(tags=["metrics"], dependencies=[public("Prometheus scrapes it; METRICS_TOKEN guards it when set")])

CACHE_SECONDS = 5.0
_REGISTRY_LOCK = threading.Lock()  # one registry per app, built at the first scrape
ACTIVE_STATUSES = tuple(status for status in INCIDENT_TRANSITIONS if status not in ENDED_STATUSES)
SEVERITIES = get_args(Severity)
QUERY_FAILURES = Counter(
    "agent_monitor_metrics_query_failures", "Scrapes whose database figures could not be read (left out of the answer)."
)

# Both use an index (ix_incidents_status; ix_approvals_status_expires_at): their cost follows the open work, not the
# history. A statement timeout keeps a sick database from holding the scrape.
_INCIDENTS = text(
    "SELECT status, severity, count(*) FROM incidents WHERE status = ANY(:statuses) GROUP BY status, severity"
)
_APPROVALS = text(
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(requested_at)), 0) "
    "FROM approvals WHERE status = 'pending'"
)


class DomainCollector(Collector):
    """The database's figures, read at scrape time (at most once per CACHE_SECONDS)."""

    def __init__(self, engine: Engine, cache_seconds: float = CACHE_SECONDS) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] = (0.0, [])

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            at, metrics = self._cached
            if time.monotonic() - at > self._cache_seconds:
                try:
                    metrics = self._read()
                except Exception as err:  # the scrape still answers: this process's own figures
                    QUERY_FAILURES.inc()
                    log.warning("metrics: cannot read the database's figures (%s)", str(err).splitlines()[0][:200])
                    metrics = []
                self._cached = (time.monotonic(), metrics)
        return metrics

    def _read(self) -> list[Metric]:
        counts = {(status, severity): 0 for status in ACTIVE_STATUSES for severity in SEVERITIES}
        with self._engine.connect() as db:
            db.execute(text("SET LOCAL statement_timeout = '2s'"))
            for status, severity, count in db.execute(_INCIDENTS, {"statuses": list(ACTIVE_STATUSES)}):
                counts[(status, severity)] = count
            pending, oldest = db.execute(_APPROVALS).one()
        incidents = GaugeMetricFamily(
            "agent_monitor_incidents",
            "Incidents not ended (open, in_progress, reopened), by status and severity.",
            labels=["status", "severity"],
        )
        for (status, severity), count in counts.items():
            incidents.add_metric([status, severity], count)
        return [
            incidents,
            GaugeMetricFamily("agent_monitor_approvals_pending", "Approval requests waiting for a decision.", pending),
            GaugeMetricFamily(
                "agent_monitor_approvals_oldest_pending_seconds",
                "How long the oldest pending approval request has waited (0: none waits).",
                float(oldest),
            ),
        ]


class LiveCollector(Collector):
    """This process's live-event streams, read from its hub (api/event_hub.py), if one was started, and whether its
    credential listener is up (api/credential_cache.py)."""

    def __init__(self, state: Any) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        hub = getattr(self._state, "event_hub", None)
        yield GaugeMetricFamily(
            "agent_monitor_sse_clients", "Live-event streams this web process serves.", hub.clients if hub else 0
        )
        credentials = getattr(self._state, "credentials", None)
        yield GaugeMetricFamily(
            "agent_monitor_credential_listener_up",
            "1 while this web process listens for credential changes and so may remember callers (0: it asks the "
            "database every time).",
            1 if credentials is not None and credentials.listening else 0,
        )


def web_registry(state: Any) -> CollectorRegistry:
    """What GET /metrics serves for one app: the process's metrics and the app's own collectors."""
    registry = CollectorRegistry()
    registry.register(REGISTRY)  # a registry is a collector too
    registry.register(PoolCollector(state.engine))
    # app.state.metrics_cache_seconds: the tests' 0, so each scrape reads what they just wrote.
    registry.register(DomainCollector(state.engine, getattr(state, "metrics_cache_seconds", CACHE_SECONDS)))
    registry.register(LiveCollector(state))
    return registry


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus' text format. Runs in the thread pool: the database figures are read here."""
    token = request.app.state.settings.metrics_token.get_secret_value()
    if not scrape_allowed(request.headers.get("authorization", ""), token):
        return Response("METRICS_TOKEN required\n", 401, {"WWW-Authenticate": "Bearer"}, "text/plain")
    state = request.app.state
    with _REGISTRY_LOCK:
        registry = getattr(state, "metrics_registry", None)
        if registry is None:
            registry = state.metrics_registry = web_registry(state)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
