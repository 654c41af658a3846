"""GET /api/conversations on real Postgres + pgvector with the real embedding model: semantic search across
incidents, keyword search with ranking, filters, pages, and clear errors."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session

from core.conversations import ConversationMessage
from core.embeddings import MiniLMProvider
from tests.api.incident_rows import insert_incident
from worker.indexer import EmbeddingIndexer

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def add(
    engine, incident_id: int, content: str, *, agent: str = "investigate", role: str = "assistant", minutes: int = 0
) -> int:
    with Session(engine) as session:
        row = ConversationMessage(
            incident_id=incident_id,
            workflow_id=f"incident-{incident_id}",
            step_id=agent,
            agent=agent,
            role=role,
            content=content,
            meta={"tokens": len(content.split())},
            created_at=T0 + timedelta(minutes=minutes),
        )
        session.add(row)
        session.commit()
        assert row.id is not None
        return row.id


@pytest.fixture
def history(engine) -> dict[str, Any]:
    """Two incidents' conversations, embedded by the real indexer with the real model."""
    db_incident = insert_incident(engine, title="checkout 500s", service="checkout")
    other = insert_incident(engine, title="newsletter", service="mailer")
    ids = {
        "pool": add(engine, db_incident, "database connection pool exhausted: 50/50 connections in use", minutes=1),
        "latency": add(engine, db_incident, "p99 latency of checkout rose to 2300 ms", agent="metrics", minutes=2),
        "restart": add(
            engine, db_incident, "restarted checkout-api; pool back to 3/50", agent="remediate", role="tool", minutes=3
        ),
        "mail": add(engine, other, "the quarterly marketing newsletter was sent to 12,000 readers", minutes=4),
        "disk": add(engine, other, "disk usage on /var at 71 percent, within limits", agent="metrics", minutes=5),
    }
    embedded = EmbeddingIndexer(engine, MiniLMProvider()).backfill()
    assert embedded == 5
    return {"incident": db_incident, "other": other, "ids": ids}


async def test_semantic_search_finds_the_pool_exhaustion_across_incidents(api, history):
    found = await api.get("/api/conversations", params={"semantic": "postgres ran out of connections"})
    assert found.status_code == 200, found.text
    page = found.json()
    assert page["order"] == "relevance"
    ids = [m["id"] for m in page["items"]]
    assert ids[0] == history["ids"]["pool"]
    scores = [m["similarity"] for m in page["items"]]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > scores[ids.index(history["ids"]["mail"])] + 0.2  # ranked well above unrelated text

    # Only the other incident: "what happened elsewhere" leaves the current one out.
    elsewhere = await api.get(
        "/api/conversations",
        params={"semantic": "postgres ran out of connections", "exclude_incident": history["incident"]},
    )
    assert {m["incident_id"] for m in elsewhere.json()["items"]} == {history["other"]}


async def test_keyword_search_ranks_and_filters_work(api, history):
    ranked = (await api.get("/api/conversations", params={"q": "pool connections"})).json()["items"]
    assert [m["id"] for m in ranked] == [history["ids"]["pool"]]  # both words: only the first message
    either = (await api.get("/api/conversations", params={"q": "pool or newsletter"})).json()["items"]
    assert {m["id"] for m in either} == {history["ids"]["pool"], history["ids"]["restart"], history["ids"]["mail"]}
    ranks = [m["rank"] for m in either]
    assert ranks == sorted(ranks, reverse=True) and all(r > 0 for r in ranks)

    by_agent = await api.get("/api/conversations", params={"agent": "metrics"})
    assert [m["id"] for m in by_agent.json()["items"]] == [history["ids"]["disk"], history["ids"]["latency"]]

    by_role = await api.get("/api/conversations", params={"role": "tool"})
    assert [m["id"] for m in by_role.json()["items"]] == [history["ids"]["restart"]]

    window = await api.get(
        "/api/conversations",
        params={
            "since": (T0 + timedelta(minutes=2)).isoformat(),
            "until": (T0 + timedelta(minutes=4)).isoformat(),
            "incident": history["incident"],
        },
    )
    assert [m["id"] for m in window.json()["items"]] == [history["ids"]["restart"], history["ids"]["latency"]]

    oldest = await api.get("/api/conversations", params={"order": "oldest", "incident": history["incident"]})
    assert [m["id"] for m in oldest.json()["items"]] == [
        history["ids"]["pool"],
        history["ids"]["latency"],
        history["ids"]["restart"],
    ]


async def test_pages_walk_every_message_once(api, history):
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/api/conversations", params=params)).json()
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(history["ids"].values(), reverse=True)

    relevance: list[int] = []
    cursor = None
    for _ in range(5):
        params = {"limit": 2, "semantic": "connections"}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/api/conversations", params=params)).json()
        relevance += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(relevance) == sorted(history["ids"].values())


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"role": "robot"}, "role"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-11-30T12:00:00"}, "time zone"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "e30"}, "cursor"),  # {} : valid JSON, not one of ours
        ({"order": "sideways"}, "order"),
        ({"limit": 0}, "limit"),
        ({"incident": 0}, "incident"),
    ],
)
async def test_bad_queries_get_a_clear_422(api, params, problem):
    answer = await api.get("/api/conversations", params=params)
    assert answer.status_code == 422, answer.text
    assert problem in answer.text


async def test_operator_messages_need_a_responder_and_content(client_as, engine):
    incident_id = insert_incident(engine)
    viewer = await client_as("viewer")
    refused = await viewer.post(f"/api/incidents/{incident_id}/messages", json={"content": "hi"})
    assert refused.status_code == 403
    responder = await client_as("responder", "rita")
    blank = await responder.post(f"/api/incidents/{incident_id}/messages", json={"content": "   "})
    assert blank.status_code == 422 and "blank" in blank.text
    missing = await responder.post("/api/incidents/99999999/messages", json={"content": "hi"})
    assert missing.status_code == 404
    # Concurrent repeats with one Idempotency-Key store one message.
    answers = await asyncio.gather(
        *(
            responder.post(
                f"/api/incidents/{incident_id}/messages",
                json={"content": "<script>alert(1)</script> checked the graphs"},
                headers={"Idempotency-Key": "same"},
            )
            for _ in range(5)
        )
    )
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 201]
    assert len({a.json()["id"] for a in answers}) == 1
    listed = await responder.get("/api/conversations", params={"incident": incident_id, "role": "user"})
    (message,) = listed.json()["items"]
    assert message["metadata"]["author"] == "rita"
    assert message["content"] == "<script>alert(1)</script> checked the graphs"  # JSON keeps it; pages escape it
