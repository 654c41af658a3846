"""Record IncidentWorkflow histories for the replay test: `python -m tests.workflows.record_histories`.

Re-record only on purpose: the point of the replay test is that a code change which would break running
incidents fails CI (use `workflow.patched()` for such changes instead).
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

import httpx
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.db import EmbeddedPostgres, make_engine, run_migrations
from core.settings import Settings
from core.temporal_dev import dynamic_config_args, search_attribute_keys, temporal_binary
from tests.factories import make_user
from tests.peers import closed_port_url, http_service
from worker.runner import incident_worker

HERE = Path(__file__).parent / "histories"


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, http_service() as (url, peer):
        postgres = EmbeddedPostgres(Path(tmp))
        database_url = postgres.start()
        run_migrations(database_url)
        engine = make_engine(database_url)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(temporal_binary()),
            search_attributes=search_attribute_keys(),
            dev_server_extra_args=dynamic_config_args(),
        )
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=database_url,
            temporal_address=env.client.service_client.config.target_host,
            task_queue=f"record-{uuid.uuid4().hex}",
            verify_checks=2,
            verify_interval_seconds=0.1,
            retry_window_seconds=0,
        )
        app = create_app(settings, engine=engine, temporal=env.client)
        cases = {"healthy": url, "recovering": url, "down": closed_port_url()}
        try:
            async with (
                incident_worker(env.client, engine, settings),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://r",
                    headers={"Authorization": f"Bearer {make_user(engine, 'responder')[1]}"},
                ) as api,
            ):
                for name, service_url in cases.items():
                    peer.script = [503, 503] if name == "recovering" else []
                    created = await api.post(
                        "/api/incidents", json={"title": name, "service": "svc", "service_url": service_url}
                    )
                    handle = env.client.get_workflow_handle(created.json()["workflow_id"])
                    try:
                        await handle.result()
                    except WorkflowFailureError:
                        pass
                    history = await handle.fetch_history()
                    (HERE / f"{name}.json").write_text(history.to_json())
        finally:
            await env.shutdown()
            engine.dispose()
            postgres.stop()


if __name__ == "__main__":
    asyncio.run(main())
