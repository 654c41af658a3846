"""A throwaway stack for scripts (benchmarks, history recording): private Postgres, in-memory dev server."""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

from core.converter import DATA_CONVERTER
from core.db import EmbeddedPostgres, make_engine, run_migrations
from core.settings import Settings
from core.temporal_dev import dynamic_config_args, search_attribute_keys, temporal_binary


@dataclass
class LocalStack:
    env: WorkflowEnvironment
    engine: Engine
    settings: Settings


@asynccontextmanager
async def local_stack(prefix: str, **settings: object) -> AsyncIterator[LocalStack]:
    """Migrated Postgres + Temporal dev server + Settings pointing at both (extra settings as keywords)."""
    with tempfile.TemporaryDirectory(prefix=f"am-{prefix}-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp))
        database_url = postgres.start()
        run_migrations(database_url)
        engine = make_engine(database_url, pool_size=20, pre_ping=False)  # as the worker's (cli/main.py)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(temporal_binary()),
            search_attributes=search_attribute_keys(),
            dev_server_extra_args=dynamic_config_args(),
            data_converter=DATA_CONVERTER,
        )
        try:
            yield LocalStack(
                env=env,
                engine=engine,
                settings=Settings(
                    _env_file=None,  # type: ignore[call-arg]
                    database_url=SecretStr(database_url),
                    temporal_address=env.client.service_client.config.target_host,
                    task_queue=f"{prefix}-{uuid.uuid4().hex}",
                    # Benchmarks' and recorded histories' services listen on 127.0.0.1 (the SSRF guard's default
                    # refuses loopback).
                    outbound_allow_loopback=True,
                    **settings,  # type: ignore[arg-type]
                ),
            )
        finally:
            await env.shutdown()
            engine.dispose()
            postgres.stop()


def stop_process(process: subprocess.Popen[Any], wait: float = 20) -> None:
    """SIGTERM, then SIGKILL if it is still there after `wait` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
