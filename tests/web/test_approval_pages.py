"""Approvals in a real Chromium: a request appears live on the overview and the incident page, an approver
decides from the approval page (also at phone width), and a responder sees no decision form."""

from __future__ import annotations

from playwright.async_api import expect

from tests.api.test_approvals import decision_audit, gated_incident
from tests.factories import make_user, wait_for_workflow
from tests.web.conftest import log_in
from tests.web.test_live_pages import assert_not_reloaded, live, mark_page


async def test_an_approval_request_appears_live_and_is_approved_from_its_page(
    server, browser, api, engine, temporal_client, worker, artifacts_dir
):
    make_user(engine, "approver", username="alice")
    page = await browser.new_page()
    await log_in(page, server, "alice", "/overview")
    await live(page)
    await mark_page(page)

    incident = await gated_incident(api)
    pending = page.get_by_test_id("pending-approvals")
    await expect(pending).to_contain_text("remediate: restart web-1")  # live, without a reload
    await expect(pending).to_contain_text("risk high")
    await expect(page.locator("#feed")).to_contain_text("approval requested for remediate")
    await assert_not_reloaded(page)

    await pending.get_by_role("link", name="Review").click()
    await expect(page.get_by_test_id("approval-status")).to_have_text("pending")
    await expect(page.locator("main")).to_contain_text("one replica restarts")
    await expect(page.locator("main")).to_contain_text("monitor: web-1 answers 503")
    await page.set_viewport_size({"width": 375, "height": 812})
    await page.screenshot(path=str(artifacts_dir / "approval-375.png"), full_page=True)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the approval page scrolls sideways at 375 px ({width} px wide)"
    await page.fill("#decision-comment", "checked the graphs")
    await page.get_by_role("button", name="Approve", exact=True).click()
    await expect(page.get_by_test_id("approval-status")).to_have_text("approved")
    await expect(page.locator("main")).to_contain_text("approved by alice via ui: checked the graphs")
    await expect(page.locator("main")).to_contain_text("viewed by alice via ui")

    outcome, state = await wait_for_workflow(temporal_client, incident["workflow_id"])
    assert outcome == "completed" and [s.status for s in state.steps] == ["completed"] * 3
    [approval] = (await api.get("/api/approvals", params={"incident_id": incident["id"]})).json()["items"]
    assert await decision_audit(api, approval["id"]) == [("approval.approved", "alice", "session", "ui")]
    await page.goto(f"{server}/incidents/{incident['id']}")
    await expect(page.locator("#approvals")).to_contain_text("by alice: checked the graphs")
    await expect(page.locator("#timeline")).to_contain_text("Approval of step remediate approved by alice")


async def test_a_responder_sees_the_request_but_no_decision_form(server, browser, api, engine, worker):
    make_user(engine, "responder", username="rita")
    incident = await gated_incident(api)
    page = await browser.new_page()
    await log_in(page, server, "rita", f"/incidents/{incident['id']}")
    await live(page)
    approvals = page.locator("#approvals")
    await expect(approvals).to_contain_text("pending")  # appears live once the workflow asks
    await approvals.get_by_role("link", name="Review").click()
    await expect(page.get_by_test_id("approval-status")).to_have_text("pending")
    await expect(page.locator("main")).to_contain_text("You may not decide this approval.")
    assert await page.get_by_test_id("decision-form").count() == 0
