"""Many browsers refreshing page parts at once (each live event makes every open page ask again), and
many API reads: none may wait on the connection pool from a worker thread (that deadlocks)."""

from __future__ import annotations

import asyncio

from sqlalchemy import event

from tests.factories import create_incident

CLIENTS = 150


async def test_a_burst_of_partial_refreshes_all_answer(api, client_as):
    incident = await create_incident(api, title="burst")
    viewer = await client_as("viewer")
    parts = ["facts", "workflow", "comments", "attachments", "timeline", "links"]
    urls = [f"/incidents/{incident['id']}/partials/{parts[n % len(parts)]}" for n in range(CLIENTS)]
    urls += ["/overview/partials/feed", "/incidents/partials/rows"] * 10
    # JSON routes whose response is validated in another thread after the route body returns.
    urls += ["/api/me", "/api/teams", "/api/incident-templates"] * 40

    responses = await asyncio.wait_for(asyncio.gather(*(viewer.get(url) for url in urls)), timeout=60)
    assert [r.status_code for r in responses] == [200] * len(urls)
    assert all("burst" in r.text for r in responses if "/partials/facts" in str(r.url))


async def test_a_burst_of_api_reads_reuses_the_pools_connections(api, engine):
    """Requests beyond what the pool keeps wait their turn on the event loop: none opens a connection past the pool
    (each such one is closed again when given back, a new Postgres backend per request under steady load)."""
    incident = await create_incident(api, title="reuse")
    opened: list[object] = []
    event.listen(engine, "connect", lambda *_: opened.append(1))
    urls = [f"/api/incidents/{incident['id']}", "/api/incidents", f"/api/incidents/{incident['id']}/comments"] * 60

    responses = await asyncio.wait_for(asyncio.gather(*(api.get(url) for url in urls)), timeout=60)
    assert [r.status_code for r in responses] == [200] * len(urls)
    assert engine.pool.checkedin() <= engine.pool.size()
    assert len(opened) <= engine.pool.size()
