"""Live pages in a real Chromium: SSE-driven updates without reloads, a phone-sized incident page, and a
stream that survives a restart of the web process without losing events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from playwright.async_api import Page, expect
from sqlmodel import Session, col, select

from app.main import create_app
from core.tables import Event
from tests.factories import create_incident, make_user, wait_for_workflow
from tests.peers import free_port
from tests.web.conftest import log_in


async def mark_page(page: Page) -> None:
    """Leave a marker that a reload would wipe out."""
    await page.evaluate("window.__no_reload = true")


async def assert_not_reloaded(page: Page) -> None:
    assert await page.evaluate("window.__no_reload === true"), "the page was reloaded"


async def live(page: Page) -> None:
    await expect(page.locator("[data-live-state]")).to_have_attribute("data-live-state", "live")


async def test_overview_shows_a_new_incident_and_its_steps_advancing(
    server, browser, api, engine, temporal_client, worker, service
):
    url, _ = service
    make_user(engine, "viewer", username="watcher")
    page = await browser.new_page()
    await log_in(page, server, "watcher", "/overview")
    await live(page)
    await expect(page.get_by_test_id("open-total")).to_have_text("0")
    await mark_page(page)

    incident = await create_incident(api, service_url=url, title="checkout is slow", severity="P1")
    feed = page.locator("#feed")
    await expect(feed.locator('[data-kind="incident.created"]:has-text("checkout is slow")')).to_be_visible()
    for agent in ("monitor", "investigate", "remediate", "verify"):  # each step shows up as it starts
        await expect(feed.locator(f'[data-kind="step.status"]:has-text("{agent} started")')).to_be_visible()
    await expect(feed.locator('[data-kind="workflow.status"]:has-text("completed")')).to_be_visible()
    await wait_for_workflow(temporal_client, incident["workflow_id"])
    await expect(page.locator("#active-workflows")).to_contain_text("No workflow is running")
    await expect(page.get_by_test_id("open-total")).to_have_text("0")  # resolved by its workflow
    await expect(page.locator("#metrics")).to_contain_text("healthy")
    await assert_not_reloaded(page)


async def test_incident_list_updates_itself_and_filters(server, browser, api, engine, temporal_client, worker, service):
    url, _ = service
    make_user(engine, "viewer", username="watcher")
    page = await browser.new_page()
    await log_in(page, server, "watcher", "/")
    await live(page)
    await mark_page(page)
    first = await create_incident(api, service_url=url, title="disk full on db-1", service="db")
    second = await create_incident(api, service_url=url, title="api 500s", service="api")
    rows = page.locator("#incident-rows tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_contain_text("api 500s")  # newest first
    await assert_not_reloaded(page)

    await page.fill("input[name=q]", "DISK")
    await page.click("text=Apply")  # every field of the form is sent, the empty ones too
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("disk full on db-1")
    await page.check("input[name=status][value=closed]")
    await page.click("text=Apply")
    await expect(page.get_by_test_id("incident-count")).to_have_text("0 incidents")
    await expect(page.locator("input[name=q]")).to_have_value("DISK")  # the filters stay as chosen
    for incident in (first, second):
        await wait_for_workflow(temporal_client, incident["workflow_id"])


async def test_incident_page_on_a_phone(server, browser, api, engine, temporal_client, worker, service, artifacts_dir):
    url, _ = service
    incident = await create_incident(api, service_url=url, title="payments: card declines spike " + "x" * 60)
    await wait_for_workflow(temporal_client, incident["workflow_id"])
    make_user(engine, "responder", username="oncall")
    context = await browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
    page = await context.new_page()
    await log_in(page, server, "oncall", f"/incidents/{incident['id']}")
    await live(page)
    await expect(page.locator('[data-step="verify"]')).to_have_attribute("data-status", "completed")

    # Comment from the page (markdown, rendered safely) …
    await page.fill("#comment-body", "Rolled back **v2.3**; <b>watching</b>")
    await page.get_by_role("button", name="Comment", exact=True).click()
    comment = page.locator(".comment").last
    await expect(comment.locator(".md strong")).to_have_text("v2.3")
    await expect(comment).to_contain_text("<b>watching</b>")  # raw HTML is shown as text
    # … and one from a colleague arrives without a reload.
    await mark_page(page)
    posted = await api.post(f"/api/incidents/{incident['id']}/comments", json={"body": "Error rate back to 0.1%"})
    assert posted.status_code == 201
    await expect(page.locator(".comment").last).to_contain_text("Error rate back to 0.1%")
    await expect(page.locator("#timeline")).to_contain_text("root commented")
    await assert_not_reloaded(page)

    # Close it with the keyboard only.
    close = page.get_by_role("button", name="Close")
    await close.focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("incident-status")).to_have_text("closed")

    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways on a phone ({width}px wide)"
    await page.screenshot(path=artifacts_dir / "incident-375px.png", full_page=True)
    await context.close()


@asynccontextmanager
async def web_process(settings, engine, temporal_client, port: int) -> AsyncIterator[None]:
    """A fresh app (its own event hub and LISTEN connection) served on the port, like a restarted process."""
    app = create_app(settings, engine=engine, temporal=temporal_client)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
    )
    instance = uvicorn.Server(config)
    task = asyncio.create_task(instance.serve())
    while not instance.started:
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        hub = getattr(app.state, "event_hub", None)
        if hub is not None:
            await hub.close()
        instance.should_exit = True
        await task


async def test_stream_resumes_after_the_web_process_restarts(browser, api, settings, engine, temporal_client):
    incident = await create_incident(api, title="resume me")  # no worker: only our comments make events
    make_user(engine, "viewer", username="watcher")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    path = f"/incidents/{incident['id']}"
    page = await browser.new_page()
    comments = f"/api/incidents/{incident['id']}/comments"

    async with web_process(settings, engine, temporal_client, port):
        await log_in(page, base, "watcher", path)
        await live(page)
        await mark_page(page)
        await api.post(comments, json={"body": "before the restart"})
        await expect(page.locator(".comment")).to_have_count(1)

    await expect(page.locator("[data-live-state]")).to_have_attribute("data-live-state", "offline")
    for n in range(5):  # written while no web process serves the stream
        assert (await api.post(comments, json={"body": f"while down {n}"})).status_code == 201

    async with web_process(settings, engine, temporal_client, port):
        await live(page)
        await api.post(comments, json={"body": "after the restart"})
        await expect(page.locator(".comment")).to_have_count(7)
        with Session(engine) as session:
            expected = list(
                session.exec(
                    select(Event.id)
                    .where(Event.incident_id == incident["id"], Event.kind == "comment.added")
                    .order_by(col(Event.id))
                )
            )
        await page.wait_for_function(f"window.agentMonitorLive.seen.includes({expected[-1]})")
        seen = await page.evaluate("window.agentMonitorLive.seen.slice()")
        assert [i for i in seen if i in expected] == expected  # every comment event, once, in order
        await assert_not_reloaded(page)
