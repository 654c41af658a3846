"""The Temporal client: one per process."""

from __future__ import annotations

from temporalio.client import Client

from core.converter import DATA_CONVERTER
from core.settings import Settings


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    """Connect to TEMPORAL_ADDRESS (or the embedded dev server); lazy defers the dial to the first call."""
    return await Client.connect(
        settings.effective_temporal_address,
        namespace=settings.temporal_namespace,
        lazy=lazy,
        data_converter=DATA_CONVERTER,
    )
