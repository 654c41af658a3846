"""The public status page in a real Chromium (issue 21): a responder lists a service on it through the service form
and posts a public update (an XSS payload) from the incident page; a visitor who is not logged in sees the
components, their 90 daily bars with a tooltip per day and the update as text — no script run, no CSP or console
error, nothing private; the page works without JavaScript and at 375 px (the last 30 days, no sideways scroll).
Screenshots: status-desktop.png, status-375.png and the incident page's section, status-incident-updates.png, in
the artifacts directory."""

from __future__ import annotations

from playwright.async_api import expect

from tests.api.test_status_page import PRIVATE, XSS, seed
from tests.factories import make_user
from tests.web.conftest import log_in
from tests.web.test_service_pages import no_sideways_scroll, watch_console
from web.pages.status_page import StatusPageState


async def test_status_page_for_the_public(app, server, browser, engine, artifacts_dir) -> None:
    ids = seed(engine)
    app.state.status_page = StatusPageState(cache_seconds=0)
    make_user(engine, "responder", username="oncall-alice")

    # A responder lists billing-db as "Billing" through the service form, and posts a public update.
    staff = await browser.new_page()
    await log_in(staff, server, "oncall-alice", "/services/billing-db/edit")
    await staff.check("#f-public_listed")
    await staff.fill("#f-public_name", "")
    await staff.click("text=Save changes")
    await expect(staff.locator("#e-public_name")).to_contain_text("give the name the public reads")
    await staff.fill("#f-public_name", "Billing")
    await staff.fill("#f-public_group", "Shop")
    await staff.click("text=Save changes")
    await staff.wait_for_url(f"{server}/services/billing-db")
    await staff.goto(f"{server}/incidents/{ids['active']}")
    await expect(staff.get_by_test_id("public-updates")).to_contain_text("No public update yet")
    await staff.select_option("#public-update-status", "identified")
    await staff.fill("#public-update-body", XSS)
    await staff.click("text=Post to the status page")
    await staff.wait_for_url(f"{server}/incidents/{ids['active']}#public-updates")
    await expect(staff.get_by_test_id("public-update")).to_contain_text(XSS)  # shown as text to the responder too
    await expect(staff.locator(".timeline")).to_contain_text("posted a public update (identified)")
    await staff.locator("#public-updates").screenshot(path=artifacts_dir / "status-incident-updates.png")

    # A visitor, not logged in.
    visitor = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await visitor.new_page()
    problems = watch_console(page)
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await page.goto(f"{server}/status")
    await expect(page.get_by_test_id("status-banner")).to_contain_text("Partial system outage")
    components = page.get_by_test_id("component")
    await expect(components).to_have_count(3)
    await expect(components.nth(0)).to_contain_text("Search")  # ungrouped first, then the Shop group by name
    await expect(components.nth(1)).to_contain_text("Billing")
    await expect(components.nth(1)).to_contain_text("Major outage")
    await expect(components.nth(2)).to_contain_text("Checkout")
    await expect(components.nth(2)).to_contain_text("Partial outage")
    bars = components.nth(2).locator(".status-day")
    await expect(bars).to_have_count(90)
    assert "100 % available, 7 checks passed" in (await bars.nth(89).get_attribute("title") or "")
    await bars.nth(87).hover()
    assert "50.00 % available, 5 of 10 checks failed" in (await bars.nth(87).get_attribute("title") or "")
    incident = page.get_by_test_id("public-incident").first
    await expect(incident).to_contain_text(XSS)  # the payload is text on the page …
    assert dialogs == [] and await page.locator(".status-incident img").count() == 0  # … and nothing of it ran
    text = await page.content()
    assert [secret for secret in PRIVATE if secret in text] == []
    await page.screenshot(path=artifacts_dir / "status-desktop.png", full_page=True)
    assert problems == []

    # A phone: the last 30 days, nothing sideways.
    phone = await browser.new_context(viewport={"width": 375, "height": 800})
    small = await phone.new_page()
    await small.goto(f"{server}/status")
    await expect(small.get_by_test_id("component").nth(2).locator(".status-day:visible")).to_have_count(30)
    await expect(small.get_by_text("30 days ago").first).to_be_visible()
    await no_sideways_scroll(small)
    await small.screenshot(path=artifacts_dir / "status-375.png", full_page=True)

    # Without JavaScript it is the same page.
    plain = await browser.new_context(java_script_enabled=False)
    bare = await plain.new_page()
    await bare.goto(f"{server}/status")
    await expect(bare.get_by_test_id("component")).to_have_count(3)
    await expect(bare.get_by_test_id("public-incident").first).to_contain_text(XSS)
    for context in (visitor, phone, plain):
        await context.close()

    # Taken off the page by the responder (a mistake): the incident is no longer shown.
    await staff.get_by_role("button", name="Remove from the status page").click()
    await staff.wait_for_url(f"{server}/incidents/{ids['active']}#public-updates")
    await expect(staff.get_by_test_id("public-updates")).to_contain_text("No public update yet")
    summary = await staff.request.get(f"{server}/status/api/summary.json")
    assert (await summary.json())["incidents"] == []
