"""Conversation history and context passing on the real dev server and Postgres: what each agent receives,
what it adds, operators' messages mid-run, immutable snapshots, and the append-only log."""

from __future__ import annotations

import psycopg
import pytest
from sqlmodel import Session, col, select

from core.context import content_hash
from core.conversations import ContextSnapshot, ConversationMessage
from core.db import libpq_url
from tests.factories import wait_for_workflow
from tests.workflows.test_engine import run_playbook, sleep, step, wait_until, workflow_status

pytestmark = pytest.mark.usefixtures("worker")


def snapshots(engine, workflow_id: str) -> dict[str, list[ContextSnapshot]]:
    with Session(engine) as session:
        rows = session.exec(
            select(ContextSnapshot)
            .where(ContextSnapshot.workflow_id == workflow_id)
            .order_by(col(ContextSnapshot.step_id), col(ContextSnapshot.version))
        ).all()
    found: dict[str, list[ContextSnapshot]] = {}
    for row in rows:
        found.setdefault(row.step_id, []).append(row)
    return found


def messages(engine, incident_id: int) -> list[ConversationMessage]:
    with Session(engine) as session:
        query = select(ConversationMessage).where(ConversationMessage.incident_id == incident_id)
        return list(session.exec(query.order_by(col(ConversationMessage.id))).all())


async def test_each_agent_of_a_chain_receives_previous_outputs_and_earlier_messages(api, temporal_client, engine):
    chain = [
        step("first", "noop", params={"summary": "first saw 3 errors"}),
        step("second", "noop", "first", params={"summary": "second found the pool exhausted"}),
        step("third", "noop", "second", params={"summary": "third restarted the pool"}),
        step("fourth", "noop", "third", params={"summary": "fourth verified: healthy"}),
    ]
    incident = await run_playbook(api, chain)
    outcome, _ = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"

    stored = messages(engine, incident["id"])
    assert [(m.step_id, m.role, m.content) for m in stored] == [
        ("first", "assistant", "first saw 3 errors"),
        ("second", "assistant", "second found the pool exhausted"),
        ("third", "assistant", "third restarted the pool"),
        ("fourth", "assistant", "fourth verified: healthy"),
    ]
    assert all(m.agent == "noop" and m.meta["tokens"] > 0 for m in stored)

    found = snapshots(engine, incident["workflow_id"])
    assert all(content_hash(rows[0].context) == rows[0].content_hash for rows in found.values())
    contexts = {step_id: rows[0].context for step_id, rows in found.items()}
    order = ["first", "second", "third", "fourth"]
    for n, step_id in enumerate(order):
        context = contexts[step_id]
        seen = [m["content"] for m in context["conversation"]["messages"]]
        assert seen == [m.content for m in stored[:n]], step_id  # every earlier agent's message, in order
        assert context["step"]["id"] == step_id
        assert context["incident"]["title"] == "checkout is failing"
        assert context["incident"]["status"] in ("open", "in_progress")
        assert context["system_state"]["service"] == "checkout"
        if n:
            previous = context["previous_outputs"][order[n - 1]]
            assert previous["summary"] == stored[n - 1].content and previous["ok"] is True
        else:
            assert context["previous_outputs"] == {}


async def test_an_operator_message_added_mid_run_reaches_the_next_agent(api, temporal_client, engine):
    incident = await run_playbook(
        api, [step("start", "noop"), sleep("wait", 3, "start"), step("after", "noop", "wait")]
    )
    workflow_id = incident["workflow_id"]
    await wait_until(lambda: "wait" in snapshots(engine, workflow_id), what="the sleeping step to start", timeout=30)
    posted = await api.post(
        f"/api/incidents/{incident['id']}/messages",
        json={"content": "I rolled back deploy 4711 by hand"},
        headers={"Idempotency-Key": "op-1"},
    )
    assert posted.status_code == 201, posted.text
    again = await api.post(
        f"/api/incidents/{incident['id']}/messages",
        json={"content": "I rolled back deploy 4711 by hand"},
        headers={"Idempotency-Key": "op-1"},
    )
    assert again.status_code == 200 and again.json()["id"] == posted.json()["id"]  # a repeat adds nothing
    outcome, _ = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"

    found = snapshots(engine, workflow_id)
    before = found["wait"][0].context
    after = found["after"][0].context
    assert all("4711" not in m["content"] for m in before["conversation"]["messages"])
    assert [u["content"] for u in after["user_inputs"]] == ["I rolled back deploy 4711 by hand"]
    assert after["user_inputs"][0]["author"] == "root"
    user_messages = [m for m in after["conversation"]["messages"] if m["role"] == "user"]
    assert [m["content"] for m in user_messages] == ["I rolled back deploy 4711 by hand"]


async def test_a_retried_step_gets_a_new_snapshot_version_and_the_old_one_is_unchanged(
    api, temporal_client, engine, settings
):
    settings.retry_window_seconds = 600
    incident = await run_playbook(
        api,
        [
            step("check", "noop", params={"summary": "service answers"}),
            step("fix", "noop", "check", params={"ok": False, "summary": "fix failed"}, fail_on_negative=True),
        ],
    )
    workflow_id = incident["workflow_id"]
    await wait_until(lambda: workflow_status(engine, workflow_id) == "failed", what="the step to fail")
    first = snapshots(engine, workflow_id)["fix"]
    assert [s.version for s in first] == [1]
    kept = (first[0].id, first[0].content_hash, first[0].context)

    retried = await api.post(
        f"/api/workflows/{workflow_id}/retry", json={"step_id": "fix", "params": {"summary": "fixed on retry"}}
    )
    assert retried.status_code == 200, retried.text
    outcome, _ = await wait_for_workflow(temporal_client, workflow_id)
    assert outcome == "completed"

    versions = snapshots(engine, workflow_id)["fix"]
    assert [s.version for s in versions] == [1, 2]
    assert (versions[0].id, versions[0].content_hash, versions[0].context) == kept
    assert versions[1].context["step"]["run"] == 2
    assert versions[1].context["step"]["params"] == {"summary": "fixed on retry"}
    # The second run sees the first run's failure in the conversation.
    assert "fix failed" in [m["content"] for m in versions[1].context["conversation"]["messages"]]
    assert versions[1].content_hash != versions[0].content_hash

    listed = await api.get(f"/api/workflows/{workflow_id}/steps/fix/contexts")
    assert [s["version"] for s in listed.json()] == [1, 2] and "context" not in listed.json()[0]
    one = await api.get(f"/api/workflows/{workflow_id}/steps/fix/contexts/1")
    assert one.status_code == 200 and one.json()["context"] == kept[2]
    missing = await api.get(f"/api/workflows/{workflow_id}/steps/fix/contexts/9")
    assert missing.status_code == 404 and "no context version 9" in missing.json()["detail"]


async def test_messages_and_snapshots_refuse_update_and_delete(api, temporal_client, engine, database_url):
    incident = await run_playbook(api, [step("only", "noop", params={"summary": "the one message"})])
    outcome, _ = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    with psycopg.connect(libpq_url(database_url), autocommit=True) as db:
        for statement in (
            "UPDATE conversation_messages SET content = 'rewritten'",
            "UPDATE conversation_messages SET metadata = '{}'::jsonb",
            "DELETE FROM conversation_messages",
            "TRUNCATE conversation_messages",
            "UPDATE context_snapshots SET context = '{}'::jsonb",
            "DELETE FROM context_snapshots",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                db.execute(statement)
        # Only the embedding may be filled in afterwards (the indexer does).
        db.execute("UPDATE conversation_messages SET embedding_model = 'test'")
    assert [m.content for m in messages(engine, incident["id"])] == ["the one message"]


async def test_agents_receive_the_registered_service_definition(api, temporal_client, engine):
    registered = await api.post(
        "/api/services",
        json={
            "name": "checkout",
            "check": {"type": "http", "url": "http://10.1.2.3/health"},
            "log_paths": ["/var/log/checkout.log"],
        },
    )
    assert registered.status_code == 201, registered.text
    incident = await run_playbook(api, [step("look", "noop")])
    outcome, _ = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    (look,) = snapshots(engine, incident["workflow_id"])["look"]
    assert look.context["service"]["name"] == "checkout"
    assert look.context["service"]["log_paths"] == ["/var/log/checkout.log"]
    assert look.context["service"]["check"]["url"] == "http://10.1.2.3/health"


async def test_parallel_branches_see_only_their_own_line_until_the_join(api, temporal_client, engine):
    """Issue 19, finding 9: parallel branches shared one conversation; each branch sees the history up to the fork
    plus its own messages, and the join sees both."""
    dag = [
        step("root", "noop", params={"summary": "root: checkout answers 502"}),
        step("quick", "noop", "root", params={"summary": "quick: the database is fine"}),
        sleep("slow", 1.5, "root"),
        step("after_slow", "noop", "slow", params={"summary": "after_slow: the cache is full"}),
        step("join", "noop", "after_slow", "quick", params={"summary": "join: both seen"}),
    ]
    incident = await run_playbook(api, dag)
    outcome, _ = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    contexts = {step_id: rows[0].context for step_id, rows in snapshots(engine, incident["workflow_id"]).items()}

    def seen(step_id: str) -> list[str]:
        return [m["content"].split(":")[0] for m in contexts[step_id]["conversation"]["messages"]]

    assert "quick" not in seen("after_slow")  # the other branch's message was there already, and is not seen
    assert seen("after_slow")[0] == "root" and "quick" not in seen("slow")
    assert {"root", "quick", "after_slow"} <= set(seen("join"))
