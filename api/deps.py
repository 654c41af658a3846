"""Request dependencies: a DB session per request, the process's Temporal client and settings.

The ones that only read app.state are coroutines: FastAPI runs a plain function dependency in a worker
thread, a hand-off that costs every request that declares it a fraction of a millisecond."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client

from core.db import pool_gate
from core.errors import INT64_MAX
from core.settings import Settings

__all__ = ["INT32_MAX", "INT64_MAX", "EngineDep", "Int32Id", "Int64Id", "SessionDep", "SettingsDep", "TemporalDep"]


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_db(request: Request) -> AsyncIterator[Session]:
    """A session per request, handed out only when a pooled connection is free.

    Requests wait for a free slot here, on the event loop, never in a worker thread: a sync route keeps its
    connection until its response is validated in another thread, so threads blocked on an exhausted pool
    could otherwise wait for connections whose holders wait for a thread — a deadlock under load.
    """
    engine: Engine = request.app.state.engine
    async with pool_gate(engine):
        session = Session(engine)
        try:
            yield session
        finally:
            await run_in_threadpool(session.close)


async def get_temporal(request: Request) -> Client:
    client: Client = request.app.state.temporal
    return client


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SessionDep = Annotated[Session, Depends(get_db)]
EngineDep = Annotated[Engine, Depends(get_engine)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

# Path ids bounded by their columns, so an out-of-range id is a 422, not a database error.
INT32_MAX = 2_147_483_647
Int32Id = Annotated[int, Path(ge=1, le=INT32_MAX)]
Int64Id = Annotated[int, Path(ge=1, le=INT64_MAX)]
