"""The conversation on the incident page, in a real Chromium: agents' messages appear live as they run (appended in
their groups, one colour and badge per agent, the reader's place and folds kept), and an operator's message
(untrusted text, shown as text) goes to the next agent."""

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
            sleep("hold", 10, "look"),
            step("act", "noop", "hold", params={"summary": "acted on what the operator said"}),
        ],
    )
    make_user(engine, "responder", username="oscar")
    page = await browser.new_page(viewport={"width": 1280, "height": 600})
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
    look = page.locator(".chat-group[data-key^='s:look:']")
    await look.locator("summary").click()  # the reader folds the first step
    await page.evaluate("window.scrollTo(0, 120)")
    scrolled = await page.evaluate("window.scrollY")
    assert scrolled > 0
    assert await conversation.get_by_text("acted on what the operator said").count() == 0  # not yet: it comes live

    await expect(conversation).to_contain_text("acted on what the operator said", timeout=20_000)  # live
    outcome, _ = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed"
    await expect(conversation.locator(".message")).to_have_count(4)
    await assert_not_reloaded(page)
    assert await page.evaluate("window.scrollY") == scrolled  # appended, not re-rendered: the reader stays put
    await expect(look).not_to_have_attribute("open", "")  # and what they folded stays folded

    # Two agents ran (noop, sleep): each group says which, by badge and name, in its own colour.
    chips = page.locator(".chat-group.group-step > summary .agent-chip")
    await expect(chips).to_have_text(["No noop", "Sl sleep", "No noop"])
    classes = await chips.evaluate_all("cs => cs.map(c => c.className)")
    assert classes[0] == classes[2] != classes[1]
    await expect(chips.locator(".agent-badge").first).to_be_visible()

    with Session(engine) as session:
        (act,) = session.exec(
            select(ContextSnapshot).where(
                ContextSnapshot.workflow_id == incident["workflow_id"], col(ContextSnapshot.step_id) == "act"
            )
        ).all()
    assert [u["content"] for u in act.context["user_inputs"]] == [hostile]
    assert act.context["user_inputs"][0]["author"] == "oscar"
