"""GET /api/conversations?service=: the messages of one service's incidents, alone or with the other filters and
searches (the conversation search page filters by it too)."""

from __future__ import annotations

from core.embeddings import embedding_provider
from tests.web.chat_rows import add_message, incident_with_conversation
from worker.indexer import EmbeddingIndexer


async def test_service_filter_keeps_one_services_incidents(client_as, engine, settings):
    checkout, checkout_ids = incident_with_conversation(engine)
    mailer, mailer_ids = incident_with_conversation(engine, title="newsletter bounce", service="mailer")
    pool_elsewhere = add_message(engine, mailer, "mailer pool of SMTP connections exhausted", seconds=40)
    viewer = await client_as("viewer")

    mine = (await viewer.get("/api/conversations", params={"service": "checkout", "limit": 200})).json()["items"]
    assert {m["incident_id"] for m in mine} == {checkout}
    assert sorted(m["id"] for m in mine) == sorted(checkout_ids.values())

    words = (await viewer.get("/api/conversations", params={"service": "mailer", "q": "pool"})).json()["items"]
    assert pool_elsewhere in [m["id"] for m in words] and {m["incident_id"] for m in words} == {mailer}
    by_agent = await viewer.get("/api/conversations", params={"service": "mailer", "agent": "investigate_metrics"})
    assert [m["id"] for m in by_agent.json()["items"]] == [mailer_ids["metrics"]]

    EmbeddingIndexer(engine, embedding_provider(settings)).backfill()
    similar = await viewer.get(
        "/api/conversations", params={"service": "checkout", "semantic": "ran out of connections"}
    )
    assert similar.status_code == 200, similar.text
    assert {m["incident_id"] for m in similar.json()["items"]} == {checkout}

    # Compatible: no service, every incident; an empty one is unset; an unknown one finds nothing.
    everything = (await viewer.get("/api/conversations", params={"limit": 200})).json()["items"]
    assert {m["incident_id"] for m in everything} == {checkout, mailer}
    blank = (await viewer.get("/api/conversations", params={"service": "", "limit": 200})).json()["items"]
    assert len(blank) == len(everything)
    assert (await viewer.get("/api/conversations", params={"service": "nope"})).json()["items"] == []
    too_long = await viewer.get("/api/conversations", params={"service": "x" * 101})
    assert too_long.status_code == 422 and "service" in too_long.text
