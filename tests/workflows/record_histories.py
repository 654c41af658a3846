"""Record IncidentWorkflow histories for the replay test: `python -m tests.workflows.record_histories`.

Re-record only on purpose: the point of the replay test is that a code change which would break running
incidents fails CI (use `workflow.patched()` for such changes instead).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from temporalio.client import WorkflowFailureError

from api.main import create_app
from bench.local_stack import LocalStack, local_stack
from tests.factories import make_user
from tests.peers import closed_port_url, http_service
from worker.runner import incident_worker

HERE = Path(__file__).parent / "histories"


async def main() -> None:
    settings = {"verify_checks": 2, "verify_interval_seconds": 0.1, "retry_window_seconds": 0}
    async with local_stack("record", **settings) as stack:
        with http_service() as (url, peer):
            await record(stack, url, peer)


async def record(stack: LocalStack, url: str, peer) -> None:
    env, engine = stack.env, stack.engine
    app = create_app(stack.settings, engine=engine, temporal=env.client)
    token = make_user(engine, "responder")[1]
    cases = {"healthy": url, "recovering": url, "down": closed_port_url()}
    async with (
        incident_worker(env.client, engine, stack.settings),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://r", headers={"Authorization": f"Bearer {token}"}
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


if __name__ == "__main__":
    asyncio.run(main())
