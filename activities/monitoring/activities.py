"""MonitorActivities: scheduled monitoring's two activities, registered by the worker as bound methods."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import Engine
from temporalio import activity

from activities.heartbeat import beat
from activities.monitoring.degraded import DegradedOpener
from activities.monitoring.outages import OutageOpener, join_open_incident
from activities.monitoring.store import PRUNE_BATCH, MonitorStore
from activities.monitoring.threads import in_monitor_thread
from activities.monitoring.tick import TickRun
from core.opening import OpenIncident
from core.payloads import CHECK_DUE_SERVICES, PRUNE_UPTIME, MonitorTick, MonitorTickResult
from core.settings import Settings
from core.tables import utcnow


class MonitorActivities:
    """The tick activity with what it needs: the database, the guarded HTTP client checks go through, settings, and
    the incident opener (core/opening.py)."""

    def __init__(
        self, engine: Engine, http: httpx.AsyncClient, settings: Settings, *, open_incident: OpenIncident
    ) -> None:
        self.engine = engine
        self.http = http
        self.settings = settings
        self.open_incident = open_incident  # services/incidents/open.py, handed in by the worker
        self.store = MonitorStore(engine)
        self.opener = OutageOpener(engine, settings, open_incident)
        self.degraded = DegradedOpener(engine, settings, open_incident)

    # Whether an outage joins an incident already open (a test runs it as a retried attempt would).
    join_open_incident = staticmethod(join_open_incident)

    def all(self) -> list[Callable[..., Any]]:
        return [self.check_due_services, self.prune_uptime_metrics]

    @activity.defn(name=CHECK_DUE_SERVICES)
    async def check_due_services(self, tick: MonitorTick) -> MonitorTickResult:
        """The shard's checks due in the next MONITOR_WINDOW_SECONDS (and in the windows after, while checks are
        still in flight), their results stored and the outages among them opened."""
        run = TickRun(
            tick, store=self.store, opener=self.opener, degraded=self.degraded, http=self.http, settings=self.settings
        )
        return await run.run()

    @activity.defn(name=PRUNE_UPTIME)
    async def prune_uptime_metrics(self) -> int:
        """Delete check results older than UPTIME_RETENTION_DAYS, a batch per transaction, then the rollups past
        theirs (minute: UPTIME_MINUTE_RETENTION_DAYS; hour and day: UPTIME_ROLLUP_RETENTION_DAYS); how many results
        went."""
        now = utcnow()
        cutoff = now - timedelta(days=self.settings.uptime_retention_days)
        deleted = 0
        while True:
            count = await in_monitor_thread(self.store.prune_batch, cutoff)
            deleted += count
            beat(deleted)
            if count < PRUNE_BATCH:
                break
        kept = self.settings.uptime_kept_days()
        for resolution, days in kept.items():
            while await in_monitor_thread(self.store.prune_rollups_batch, resolution, now - timedelta(days=days)):
                beat(resolution)
        return deleted
