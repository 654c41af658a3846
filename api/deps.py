"""Request dependencies: a DB session per request, the process's Temporal client and settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import Client

from core.settings import Settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_db(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with Session(engine) as session:
        yield session


def get_temporal(request: Request) -> Client:
    return request.app.state.temporal


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SessionDep = Annotated[Session, Depends(get_db)]
EngineDep = Annotated[Engine, Depends(get_engine)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

# Path ids bounded by their columns, so an out-of-range id is a 422, not a database error.
INT32_MAX = 2_147_483_647
INT64_MAX = 9_223_372_036_854_775_807
Int32Id = Annotated[int, Path(ge=1, le=INT32_MAX)]
Int64Id = Annotated[int, Path(ge=1, le=INT64_MAX)]
