"""The conversation on the incident page, in a real Chromium: agents' messages appear live as they run, and an
operator's message (untrusted text, shown as text) goes to the next agent."""

from __future__ import annotations

from playwright.async_api import expect
from sqlmodel import Session, col, select

from core.conversations import ContextSnapshot
from tests.factories import make_user, wait_for_workflow
from tests.web.conftest import log_in
from tests.web.test_live_pages import assert_not_reloaded, live, mark_page
from tests.workflows.test_engine import run_playbook, sleep, step


async def test_agent_messages_stream_in_and_an_operator_message_reaches_the_next_agent(
    server, browser, api, engine, temporal_client, worker
):
    incident = await run_playbook(
        api,
        [
            step("look", "noop", params={"summary": "saw 42 errors in checkout.log"}),
            sleep("hold", 8, "look"),
            step("act", "noop", "hold", params={"summary": "acted on what the operator said"}),
        ],
    )
    make_user(engine, "responder", username="oscar")
    page = await browser.new_page()
    await log_in(page, server, "oscar", f"/incidents/{incident['id']}")
    await live(page)
    await mark_page(page)
    conversation = page.get_by_test_id("conversation")
    await expect(conversation).to_contain_text("saw 42 errors in checkout.log")

    hostile = "<img src=x onerror=alert(1)> rolled back deploy 4711"
    await page.fill("#message-content", hostile)
    await page.click("[data-testid=message-form] button[type=submit]")
    user_message = page.locator(".message.role-user .content")
    await expect(user_message).to_have_text(hostile)  # shown as text, never as markup
    assert await page.locator(".messages img").count() == 0
    await live(page)  # the form redirected back to the page
    await mark_page(page)

    await expect(conversation).to_contain_text("acted on what the operator said", timeout=20_000)  # live
    outcome, _ = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    await expect(conversation.locator(".message")).to_have_count(4)
    await assert_not_reloaded(page)

    with Session(engine) as session:
        (act,) = session.exec(
            select(ContextSnapshot).where(
                ContextSnapshot.workflow_id == incident["workflow_id"], col(ContextSnapshot.step_id) == "act"
            )
        ).all()
    assert [u["content"] for u in act.context["user_inputs"]] == [hostile]
    assert act.context["user_inputs"][0]["author"] == "oscar"
