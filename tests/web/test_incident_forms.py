"""Changing incidents from the pages (plain HTML forms: they work without JavaScript too)."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.factories import create_incident, make_user, wait_for_workflow
from tests.web.conftest import log_in


async def test_open_an_incident_from_the_page(server, browser, engine, temporal_client, worker, service):
    url, _ = service
    make_user(engine, "responder", username="oncall")
    page = await browser.new_page()
    await log_in(page, server, "oncall", "/incidents/new")

    await page.fill("#f-service", "checkout")
    await page.click("text=Open incident and start its playbook")
    await expect(page.locator("#e-title")).to_contain_text("at least 1 character")  # 422, typed values kept
    await expect(page.locator("#f-service")).to_have_value("checkout")

    await page.fill("#f-title", "checkout answers 502")
    await page.fill("#f-service_url", url)
    await page.select_option("#f-severity", "P2")
    await page.click("text=Open incident and start its playbook")
    await page.wait_for_url(re.compile(rf"{server}/incidents/\d+$"))
    await expect(page.locator("h1")).to_contain_text("checkout answers 502")
    await expect(page.get_by_test_id("workflow-status")).to_have_text("completed")  # live, no reload
    await expect(page.get_by_test_id("incident-status")).to_have_text("resolved")
    workflow_id = (await page.locator("#workflow a").first.inner_text()).split()[0]
    await wait_for_workflow(temporal_client, workflow_id)


async def test_attach_and_link_from_the_page(server, browser, api, engine, tmp_path):
    first = await create_incident(api, title="db-1 disk full")  # no worker needed: nothing here runs agents
    second = await create_incident(api, title="api 500s")
    make_user(engine, "responder", username="oncall")
    page = await browser.new_page()
    await log_in(page, server, "oncall", f"/incidents/{second['id']}")

    await expect(page.get_by_test_id("assignee")).to_have_text("nobody")
    await page.get_by_role("button", name="Assign to me").click()
    await expect(page.get_by_test_id("assignee")).to_have_text("oncall")
    await expect(page.locator("#timeline")).to_contain_text("oncall assigned it to oncall")

    log = tmp_path / "api-errors.log"
    log.write_text("2026-11-25 ERROR pool exhausted\n")
    await page.set_input_files("#attachment-file", log)
    await page.click("text=Upload")
    await expect(page.locator(".attachments a")).to_have_text("api-errors.log")
    download = await page.request.get(server + (await page.locator(".attachments a").get_attribute("href") or ""))
    assert download.status == 200 and await download.text() == "2026-11-25 ERROR pool exhausted\n"

    page_file = tmp_path / "evil.html"
    page_file.write_text("<script>alert(1)</script>")
    await page.set_input_files("#attachment-file", page_file)
    await page.click("text=Upload")
    await expect(page.get_by_role("alert")).to_contain_text("text/html is not accepted")

    await page.goto(f"{server}/incidents/{second['id']}")
    await page.select_option("select[name=kind]", "caused_by")
    await page.fill("input[name=related_incident_id]", f"#{first['id']}")
    await page.click("button:text-is('Link')")
    await expect(page.locator('[data-link="caused_by"]')).to_contain_text("db-1 disk full")
    await page.goto(f"{server}/incidents/{first['id']}")
    await expect(page.locator('[data-link="causes"]')).to_contain_text("api 500s")  # both sides show it
