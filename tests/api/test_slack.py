"""Slack approvals: the request goes out through slack-sdk to a local server speaking Slack's Web API; signed
button clicks decide, stale / tampered / replayed ones do not; the message is replaced via response_url."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr
from slack_sdk.signature import SignatureVerifier

from tests.api.test_approvals import decision_audit, gated_incident, pending_approval
from tests.factories import make_user, wait_for_workflow
from tests.peers_slack import slack_api

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@pytest.fixture
def slack(settings):
    """Slack configured in this test's settings (before the worker and app read them)."""
    with slack_api() as (base, calls):
        settings.slack_bot_token = SecretStr("xoxb-test-token")
        settings.slack_signing_secret = SecretStr(SECRET)
        settings.slack_channel = "#ops-approvals"
        settings.slack_api_url = f"{base}/api/"
        settings.slack_response_hosts = [base.removeprefix("http://")]  # response_url leads to the stand-in
        yield base, calls


def click(
    base: str,
    approval_id: int,
    action: str,
    user: dict,
    *,
    at: float | None = None,
    sign_body: bytes | None = None,
    response_url: str | None = None,
):
    """(body, headers) of a block_actions request as Slack sends it, signed with the app's secret."""
    payload = {
        "type": "block_actions",
        "user": user,
        "actions": [{"action_id": action, "value": str(approval_id), "type": "button", "action_ts": str(time.time())}],
        "response_url": response_url or f"{base}/actions/T1/{approval_id}/{user['id']}",
        "trigger_id": "123.456.abc",
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(at if at is not None else time.time()))
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=timestamp, body=sign_body or body)
    headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature,
               "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    return body, headers


async def wait_for(predicate, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_slack_click_decides_once_and_replaces_the_message(slack, worker, server, api, engine, temporal_client):
    base, calls = slack
    alice, _ = make_user(engine, "approver", username="alice")
    linked = await api.patch(f"/api/users/{alice.id}", json={"slack_user_id": "U0ALICE1"})
    assert linked.status_code == 200 and linked.json()["slack_user_id"] == "U0ALICE1"
    incident = await gated_incident(api)
    approval = await pending_approval(api, incident["id"])

    await wait_for(lambda: calls.posted, "the request to reach Slack")
    posted = calls.posted[0]
    assert posted["_auth"] == "Bearer xoxb-test-token" and posted["channel"] == "#ops-approvals"
    buttons = posted["blocks"][-1]["elements"]
    assert [(b["action_id"], b["value"]) for b in buttons] == [
        ("approval_approve", str(approval["id"])), ("approval_reject", str(approval["id"]))
    ]  # fmt: skip
    assert "restart web-1" in posted["blocks"][0]["text"]["text"]
    url = f"{server}/api/slack/interactions"
    alice_in_slack = {"id": "U0ALICE1", "username": "alice.smith", "team_id": "T1"}
    async with httpx.AsyncClient(timeout=10) as slack_client:
        stale = click(base, approval["id"], "approval_approve", alice_in_slack, at=time.time() - 301)
        assert (await slack_client.post(url, content=stale[0], headers=stale[1])).status_code == 401
        tampered_body, tampered_headers = click(base, approval["id"], "approval_approve", alice_in_slack,
                                                sign_body=b"payload=%7B%7D")  # fmt: skip
        assert (await slack_client.post(url, content=tampered_body, headers=tampered_headers)).status_code == 401
        garbled_body, garbled_headers = click(base, approval["id"], "approval_approve", alice_in_slack)
        garbled_headers["X-Slack-Request-Timestamp"] = "soon"
        assert (await slack_client.post(url, content=garbled_body, headers=garbled_headers)).status_code == 401

        # Someone else in the workspace who named themselves alice: mapped by the linked Slack id only.
        impostor = click(base, approval["id"], "approval_approve", {"id": "U0NOBODY", "username": "alice"})
        assert (await slack_client.post(url, content=impostor[0], headers=impostor[1])).status_code == 200
        await wait_for(lambda: calls.responses, "the impostor's answer")
        assert "not linked to an Agent Monitor user" in calls.responses[0]["text"]
        assert calls.responses[0]["response_type"] == "ephemeral"
        assert (await api.get(f"/api/approvals/{approval['id']}")).json()["status"] == "pending"

        body, headers = click(base, approval["id"], "approval_approve", alice_in_slack)
        started = time.monotonic()
        first = await slack_client.post(url, content=body, headers=headers)
        assert first.status_code == 200 and time.monotonic() - started < 3  # Slack's 3 s deadline
        retry = await slack_client.post(url, content=body, headers={**headers, "X-Slack-Retry-Num": "1"})
        replayed = await slack_client.post(url, content=body, headers=headers)  # the same click again
        assert retry.status_code == 200 and replayed.status_code == 200

    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed" and [s.status for s in state.steps] == ["completed"] * 3
    assert [c["kind"] for c in state.changes] == ["decide_approval"]  # one decision
    assert (state.steps[1].approval.decided_by, state.steps[1].approval.channel) == ("alice", "slack")
    await wait_for(lambda: any(r.get("replace_original") for r in calls.responses), "the message to be replaced")
    replaced = next(r for r in calls.responses if r.get("replace_original"))
    assert replaced["text"] == f"Approval {approval['id']} (remediate): *approved* by alice"
    detail = (await api.get(f"/api/approvals/{approval['id']}")).json()
    kinds = [(e["kind"], e["channel"]) for e in detail["events"]]
    assert kinds[:2] == [("requested", None), ("notified", "slack")] and ("decided", "slack") in kinds
    assert await decision_audit(api, approval["id"]) == [("approval.approved", "alice", "slack", "slack")]


async def test_a_decision_elsewhere_updates_the_slack_message(slack, worker, api, temporal_client):
    base, calls = slack
    incident = await gated_incident(api)
    approval = await pending_approval(api, incident["id"])
    await wait_for(lambda: calls.posted, "the request to reach Slack")
    body = {"decision": "reject", "comment": "<!channel> not now"}
    decided = await api.post(f"/api/approvals/{approval['id']}/decision", json=body)
    assert decided.status_code == 200
    await wait_for(lambda: calls.updated, "the Slack message to be updated")
    update = calls.updated[0]
    assert (update["channel"], update["ts"]) == ("C0APPROVALS", "1732550000.000001")
    # the buttons are gone, and the comment cannot ping the channel
    assert update["text"] == f"Approval {approval['id']} (remediate): *rejected* by root: &lt;!channel&gt; not now"
    assert [b["type"] for b in update["blocks"]] == ["section"]
    await wait_for_workflow(temporal_client, incident["workflow_id"])


async def test_slack_down_does_not_delay_the_approval(slack, worker, api, temporal_client):
    base, calls = slack
    calls.fail_posts = 2  # Slack answers 500 twice: Temporal retries the send
    incident = await gated_incident(api)
    approval = await pending_approval(api, incident["id"])  # pending at once, whatever Slack does
    decided = await api.post(f"/api/approvals/{approval['id']}/decision", json={"decision": "reject"})
    assert decided.status_code == 200
    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert state.steps[1].status == "failed" and state.steps[1].error == "not run: approval rejected by root"


async def test_interactions_without_slack_configured_are_404(server):
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(f"{server}/api/slack/interactions", content=b"payload=%7B%7D")
    assert answer.status_code == 404 and "SLACK_SIGNING_SECRET" in answer.json()["detail"]


async def test_a_slack_account_links_to_one_user(api, engine):
    first, _ = make_user(engine, "approver")
    second, _ = make_user(engine, "approver")
    assert (await api.patch(f"/api/users/{first.id}", json={"slack_user_id": "U0SHARED"})).status_code == 200
    taken = await api.patch(f"/api/users/{second.id}", json={"slack_user_id": "U0SHARED"})
    assert taken.status_code == 409 and taken.json()["detail"] == f"Slack user U0SHARED is linked to {first.username}"
    bad = await api.patch(f"/api/users/{second.id}", json={"slack_user_id": "not-a-slack-id"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "slack_user_id"


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("https://hooks.slack.com/actions/T1/1/abc", None),
        ("https://HOOKS.slack.com.:443/actions/T1/1/abc", None),
        ("http://127.0.0.1:8025/actions/x", None),  # a listed loopback stand-in may be plain http
        ("http://hooks.slack.com/actions/T1/1/abc", "http://hooks.slack.com is not https://"),
        ("https://hooks.slack.com:8443/actions", "hooks.slack.com:8443 is not in SLACK_RESPONSE_HOSTS"),
        ("https://hooks.slack.com.evil.example/a", "hooks.slack.com.evil.example is not in SLACK_RESPONSE_HOSTS"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is not in SLACK_RESPONSE_HOSTS"),
        ("https://hooks.slack.com@evil.example/", "the URL to evil.example carries credentials"),
        ("https://evil.example\\@hooks.slack.com/", "the URL to hooks.slack.com carries credentials"),
        ("http://127.0.0.1:9/actions/x", "127.0.0.1:9 is not in SLACK_RESPONSE_HOSTS"),
        ("file:///etc/passwd", "not an https:// URL"),
        ("/actions/T1", "not an https:// URL"),
    ],
)
def test_a_response_url_must_be_https_to_a_listed_slack_host(url, refusal):
    from api.routes.slack import response_url_refusal

    found = response_url_refusal(httpx.URL(url), ["hooks.slack.com", "127.0.0.1:8025"])
    if refusal is None:
        assert found is None
    else:
        assert (found or "").startswith(refusal), found


async def unlinked_click(server: str, base: str, response_url: str) -> None:
    """A signed click by a Slack user linked to nobody: we only answer them, through the response_url."""
    body, headers = click(base, 1, "approval_approve", {"id": "U0NOBODY"}, response_url=response_url)
    async with httpx.AsyncClient(timeout=10) as slack_client:
        answer = await slack_client.post(f"{server}/api/slack/interactions", content=body, headers=headers)
    assert answer.status_code == 200


def slack_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "api.routes.slack" and r.levelname == "WARNING"]


async def test_a_response_url_off_the_list_is_never_called(slack, server, caplog):
    base, calls = slack
    with slack_api() as (elsewhere, elsewhere_calls):  # a signed payload may name any URL
        await unlinked_click(server, base, f"{elsewhere}/actions/T1/1/U0NOBODY")
        await wait_for(lambda: slack_warnings(caplog), "the refusal to be logged")
        host = elsewhere.removeprefix("http://")
        assert slack_warnings(caplog) == [
            f"not calling the Slack interaction's response_url: {host} is not in SLACK_RESPONSE_HOSTS "
            f"({base.removeprefix('http://')})"
        ]
        assert elsewhere_calls.responses == [] and calls.responses == []

    await unlinked_click(server, base, f"{base}/actions/T1/1/U0NOBODY")  # the listed one is called
    await wait_for(lambda: calls.responses, "the answer through the listed response_url")
    assert "not linked to an Agent Monitor user" in calls.responses[0]["text"]


async def test_a_listed_response_url_still_passes_the_ssrf_guard(slack, settings, server, caplog):
    base, calls = slack
    settings.outbound_allow_loopback = False  # production's default: the listed stand-in is on loopback
    await unlinked_click(server, base, f"{base}/actions/T1/1/U0NOBODY")
    await wait_for(lambda: slack_warnings(caplog), "the refusal to be logged")
    assert slack_warnings(caplog) == [
        "could not update the Slack message: refused: 127.0.0.1 is loopback: refused "
        "(set OUTBOUND_ALLOW_LOOPBACK=true to allow)"
    ]
    assert calls.responses == []
