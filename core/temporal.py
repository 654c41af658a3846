"""The Temporal client: one per process."""

from __future__ import annotations

from temporalio.client import Client, Interceptor
from temporalio.runtime import Runtime

from core.converter import DATA_CONVERTER
from core.metrics import TemporalErrorCounter
from core.settings import Settings
from core.telemetry import Tracing


async def connect(
    settings: Settings, *, lazy: bool = False, tracing: Tracing | None = None, runtime: Runtime | None = None
) -> Client:
    """Connect to TEMPORAL_ADDRESS (or the embedded dev server); lazy defers the dial to the first call. Its calls'
    RPC errors are counted (core/metrics.py); with tracing, workers built on it trace workflows and activities;
    `runtime` carries the SDK's own metrics (worker/metrics.py)."""
    interceptors: list[Interceptor] = [TemporalErrorCounter(), *(tracing.temporal_interceptors() if tracing else [])]
    return await Client.connect(
        settings.effective_temporal_address,
        namespace=settings.temporal_namespace,
        lazy=lazy,
        data_converter=DATA_CONVERTER,
        interceptors=interceptors,
        runtime=runtime,
    )
