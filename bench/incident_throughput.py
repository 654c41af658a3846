"""Throughput of whole incidents (API → 4-step workflow → projection) against a raw Temporal baseline.

Both run in this process against the same embedded Temporal dev server, so the ratio is what our
workflow costs over the minimum Temporal round trip (1 no-op activity per workflow).

    make bench            # or: python -m bench.incident_throughput --count 200
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.main import create_app
from bench.baseline import BaselineWorkflow, noop
from core.db import EmbeddedPostgres, make_engine, run_migrations
from core.settings import Settings
from core.temporal_dev import dynamic_config_args, search_attribute_keys, temporal_binary
from tests.peers import http_service
from worker.runner import incident_worker


async def _gather_bounded(coros, limit: int = 50):
    semaphore = asyncio.Semaphore(limit)

    async def run(coro):
        async with semaphore:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))


async def baseline(env: WorkflowEnvironment, count: int) -> float:
    queue = f"bench-baseline-{uuid.uuid4().hex}"
    async with Worker(env.client, task_queue=queue, workflows=[BaselineWorkflow], activities=[noop]):
        started = time.perf_counter()
        await _gather_bounded(
            env.client.execute_workflow(BaselineWorkflow.run, "x", id=f"{queue}-{i}", task_queue=queue)
            for i in range(count)
        )
        return count / (time.perf_counter() - started)


async def incidents(env: WorkflowEnvironment, engine, settings: Settings, url: str, count: int) -> float:
    app = create_app(settings, engine=engine, temporal=env.client)
    async with (
        incident_worker(env.client, engine, settings),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as api,
    ):
        started = time.perf_counter()

        async def one(i: int) -> None:
            response = await api.post(
                "/api/incidents", json={"title": f"bench {i}", "service": "bench", "service_url": url}
            )
            response.raise_for_status()
            await env.client.get_workflow_handle(response.json()["workflow_id"]).result()

        await _gather_bounded(one(i) for i in range(count))
        return count / (time.perf_counter() - started)


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="am-bench-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp))
        database_url = postgres.start()
        run_migrations(database_url)
        engine = make_engine(database_url, pool_size=20)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(temporal_binary()),
            search_attributes=search_attribute_keys(),
            dev_server_extra_args=dynamic_config_args(),
        )
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=database_url,
            temporal_address=env.client.service_client.config.target_host,
            task_queue=f"bench-{uuid.uuid4().hex}",
            workflow_id_prefix=f"bench{uuid.uuid4().hex[:6]}-",
        )
        try:
            with http_service() as (url, _):
                raw = await baseline(env, count)
                ours = await incidents(env, engine, settings, url, count)
        finally:
            await env.shutdown()
            engine.dispose()
            postgres.stop()
    print(f"workflows: {count} each, one machine, in-memory dev server")
    print(f"baseline  (1 no-op activity per workflow):          {raw:7.1f} workflows/s")
    print(f"incidents (API + 4 agents + 10 projection writes):  {ours:7.1f} incidents/s")
    print(f"ratio incidents/baseline: {ours / raw:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    asyncio.run(main(parser.parse_args().count))
