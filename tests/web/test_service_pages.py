"""The services pages in a real Chromium (issue 21): the list updates itself when a real local service goes down, a
service's uptime graph renders with an incident marker whose tooltip and link work, the forms validate, create, edit,
pause, check and delete (CSRF, audited), and a phone-sized screen scrolls no page sideways."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Page, Response, expect
from sqlmodel import Session, col, select

from core.audit import AuditEvent
from core.monitoring import ServiceState
from core.services import Service
from core.tables import utcnow
from tests.factories import make_user
from tests.peers import http_service
from tests.web.conftest import log_in
from tests.workflows.test_engine import wait_until
from tests.workflows.test_monitoring import monitor_settings, monitoring, register, results, state_of

SHOTS = Path("/tmp/shots")


def audited(engine, name: str) -> list[str]:
    with Session(engine) as session:
        query = select(AuditEvent.action).where(AuditEvent.target_type == "service", AuditEvent.target_id == name)
        return list(session.exec(query.order_by(col(AuditEvent.id))))


def watch_console(page: Page) -> list[str]:
    """Console errors (CSP refusals among them), script errors and failed requests of the page, as they come (the
    favicon among them: the pages name theirs)."""
    problems: list[str] = []

    def seen(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning") and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    def answered(response: Response) -> None:
        if response.status >= 400:
            problems.append(f"{response.status} {response.url}")

    page.on("console", seen)
    page.on("pageerror", lambda err: problems.append(str(err)))
    page.on("response", answered)
    return problems


async def no_sideways_scroll(page: Page, width: int = 375) -> None:
    scroll = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{page.url} scrolls sideways at {width}px ({scroll}px wide)"


async def test_forms_validate_create_edit_pause_check_and_delete(server, browser, engine, service):
    url, _ = service
    make_user(engine, "responder", username="oncall")
    page = await browser.new_page()
    problems = watch_console(page)
    await log_in(page, server, "oncall", "/services")
    await page.get_by_role("link", name="Add a service").click()
    await page.wait_for_url(f"{server}/services/_new")

    # Each mistake is shown next to its field, with what was typed kept (the API's own model and checks).
    await page.fill("#f-name", "bad name")
    await page.fill("#f-interval_seconds", "0.5")
    await page.fill("#f-tags", "Has-Caps")
    await page.click("text=Add service")
    await expect(page.get_by_test_id("form-errors")).to_be_visible()
    await expect(page.locator("#e-name")).to_contain_text("should match pattern")
    await expect(page.locator("#e-url")).to_contain_text("Field required")
    await expect(page.locator("#e-interval_seconds")).to_contain_text("greater than or equal to 1")
    await expect(page.locator("#e-tags")).to_contain_text("is not a tag")
    await expect(page.locator("#f-tags")).to_have_value("Has-Caps")
    await expect(page.locator("#f-interval_seconds")).to_have_attribute("aria-invalid", "true")
    # What only the service layer knows (dependencies that exist) too.
    await page.fill("#f-name", "checkout")
    await page.fill("#f-url", url)
    await page.fill("#f-interval_seconds", "60")
    await page.fill("#f-tags", "shop, tier1")
    await page.fill("#f-dependencies", "ghost")
    await page.click("text=Add service")
    await expect(page.locator("#e-dependencies")).to_have_text("no service named 'ghost' (register it first)")
    await page.fill("#f-dependencies", "")
    await page.click("text=Add service")
    await page.wait_for_url(f"{server}/services/checkout")
    await expect(page.get_by_test_id("check-config")).to_contain_text(url)
    await expect(page.get_by_test_id("check-config")).to_contain_text("shop, tier1")

    await page.goto(f"{server}/services/_new")  # the name is taken now
    await page.fill("#f-name", "checkout")
    await page.fill("#f-url", url)
    await page.click("text=Add service")
    await expect(page.locator("#e-name")).to_contain_text("a service of this name exists")

    # Edit: the form starts from what is stored; a bad value is refused, a good one saved.
    await page.goto(f"{server}/services/checkout")
    await page.get_by_role("link", name="Edit").click()
    await expect(page.locator("#f-url")).to_have_value(url)
    await page.fill("#f-timeout_seconds", "500")
    await page.click("text=Save changes")
    await expect(page.locator("#e-timeout_seconds")).to_contain_text("less than or equal to 120")
    await page.fill("#f-timeout_seconds", "2")
    await page.fill("#f-interval_seconds", "30")
    await page.fill("#f-advanced", '{"degraded_incident": {"after_checks": 2}}')
    await page.click("text=Save changes")
    await page.wait_for_url(f"{server}/services/checkout")
    await expect(page.get_by_test_id("check-config")).to_contain_text("30 s, timeout 2 s")
    await expect(page.get_by_test_id("check-config")).to_contain_text("2 slow checks open a P4 degraded incident")

    # Pause, resume, check now.
    await page.get_by_role("button", name="Pause monitoring").click()
    await expect(page.locator("h1 .svc")).to_have_text(re.compile("paused"))
    await page.get_by_role("button", name="Resume monitoring").click()
    await expect(page.locator("h1 .svc")).not_to_have_text(re.compile("paused"))
    await page.get_by_role("button", name="Check now").click()
    await expect(page.get_by_test_id("check-requested")).to_be_visible()
    with Session(engine) as session:
        sid = session.exec(select(Service.id).where(Service.name == "checkout")).one()
        state = session.get(ServiceState, sid)
        assert state is not None and state.next_check_at <= utcnow()

    # A write without the CSRF token is refused.
    forged = await page.request.post(f"{server}/services/checkout/pause", form={"confirm": "x"})
    assert forged.status == 403 and "CSRF" in await forged.text()

    # Delete: only with the name typed.
    await page.goto(f"{server}/services/checkout/edit")
    await page.fill("#f-confirm", "checkou")
    await page.click("text=Delete service")
    await expect(page.get_by_role("alert")).to_contain_text("type its name")
    await page.goto(f"{server}/services/checkout/edit")
    await page.fill("#f-confirm", "checkout")
    await page.click("text=Delete service")
    await page.wait_for_url(f"{server}/services")
    await expect(page.get_by_test_id("service-count")).to_have_text("0 services")

    assert audited(engine, "checkout") == [
        "service.create", "service.update", "service.pause", "service.resume", "service.check_now", "service.delete",
    ]  # fmt: skip
    # The form's 422 answers are logged as failed loads; nothing else (no CSP refusal, no script error).
    assert [p for p in problems if not p.startswith(("422 ", "403 "))] == []


async def test_viewers_see_no_forms(server, browser, engine, api, service):
    url, _ = service
    assert (
        await api.post("/api/services", json={"name": "checkout", "check": {"type": "http", "url": url}})
    ).is_success
    make_user(engine, "viewer", username="watcher")
    page = await browser.new_page()
    await log_in(page, server, "watcher", "/services/checkout")
    await expect(page.get_by_role("button", name="Check now")).to_have_count(0)
    await expect(page.get_by_role("link", name="Edit")).to_have_count(0)
    answer = await page.request.get(f"{server}/services/checkout/edit")
    assert answer.status == 403


@pytest.fixture(autouse=True)
def shots_dir() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


async def test_services_page_goes_live_and_the_graph_marks_the_incident(
    server, browser, api, engine, temporal_client, settings, service
):
    url, peer = service
    settings = monitor_settings(settings)
    with http_service() as (other_url, _):
        await register(api, "checkout", url, failure_threshold=2, tags=["shop"])
        await register(api, "payments", other_url, tags=["shop"], degraded_latency_ms=800)
        make_user(engine, "viewer", username="watcher")
        async with monitoring(temporal_client, engine, settings):
            await wait_until(lambda: all(status_of(engine, n) == "up" for n in ("checkout", "payments")), 30, "up")
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            problems = watch_console(page)
            await log_in(page, server, "watcher", "/services")
            await expect(page.locator("[data-live-state]")).to_have_attribute("data-live-state", "live")
            checkout = page.locator('tr[data-service="checkout"]')
            await expect(checkout).to_have_attribute("data-status", "up")
            await page.evaluate("window.__no_reload = true")

            peer.status = 500  # the real service breaks: the row turns down by itself, with its incident
            await expect(checkout).to_have_attribute("data-status", "down", timeout=30_000)
            await expect(checkout.locator(".svc")).to_have_text(re.compile("down"))
            link = checkout.get_by_test_id("open-incident")
            await expect(link).to_be_visible(timeout=30_000)
            incident_id = int((await link.get_attribute("href") or "").rsplit("/", 1)[1])
            await expect(page.locator('tr[data-service="payments"]')).to_have_attribute("data-status", "up")
            assert await page.evaluate("window.__no_reload === true"), "the page was reloaded"
            peer.status = 200
            await expect(checkout).to_have_attribute("data-status", "up", timeout=30_000)
            # Real figures from the rollups: the failed checks cost checkout some of today's availability.
            await expect(checkout.locator('[data-uptime="24h"]')).to_have_text(re.compile(r"^\d{1,2}\.\d\d%$"))
            await expect(page.locator('tr[data-service="payments"] [data-uptime="24h"]')).to_have_text("100.00%")
            await expect(page.locator(".uptime .uplot")).to_have_count(2)
            # The all-services graph draws summed points: it asks for them without each service's own figures.
            asked = await page.evaluate(
                "performance.getEntriesByType('resource').map((e) => e.name).filter((u) => u.includes('/api/uptime?'))"
            )
            assert asked and all("per_service=false" in url for url in asked), asked
            await page.screenshot(path=SHOTS / "services-desktop.png", full_page=True)

            # The service's graph: two charts on canvas, the incident as a band with a marker.
            await page.goto(f"{server}/services/checkout")
            graph = page.locator(".uptime")
            await expect(graph).to_have_attribute("data-loading", "done")
            await expect(graph.locator("canvas")).to_have_count(2)
            await expect(page.get_by_test_id("uptime-summary")).to_contain_text("Availability")
            marker = graph.locator(f'.incident-marker[data-incident="{incident_id}"]')
            await expect(marker).to_have_count(1)
            await marker.hover()
            tip = page.locator("#uptime-tip")
            await expect(tip).to_be_visible()
            await expect(tip).to_contain_text(f"#{incident_id}")
            await expect(tip).to_contain_text("P2")
            await page.check("input[name=compare]")
            await expect(page.get_by_test_id("uptime-summary")).to_contain_text("vs the previous period")
            await expect(graph).to_have_attribute("data-loading", "done")
            await page.check("input[name=range][value='1h']")
            await expect(page.get_by_test_id("uptime-summary")).to_contain_text("1m steps")
            await expect(graph.locator(f'.incident-marker[data-incident="{incident_id}"]')).to_have_count(1)
            await page.screenshot(path=SHOTS / "service-desktop.png", full_page=True)
            for range_, step in (("7d", "1h"), ("90d", "6h"), ("1y", "1d")):  # each served from its rollup
                await page.check(f"input[name=range][value='{range_}']")
                await expect(page.get_by_test_id("uptime-summary")).to_contain_text(f"{step} steps", timeout=10_000)
                await expect(graph.locator(f'.incident-marker[data-incident="{incident_id}"]')).to_have_count(1)
            await page.check("input[name=range][value='1h']")
            await expect(page.get_by_test_id("uptime-summary")).to_contain_text("1m steps")
            await graph.locator(f'.incident-marker[data-incident="{incident_id}"]').click()
            await page.wait_for_url(f"{server}/incidents/{incident_id}")
            assert problems == [], problems

            # A phone: nothing scrolls sideways, the graph fits.
            make_user(engine, "responder", username="oncall")
            phone = await browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True, has_touch=True)
            small = await phone.new_page()
            small_problems = watch_console(small)
            await log_in(small, server, "oncall", "/services")
            await expect(small.locator('tr[data-service="checkout"]')).to_be_visible()
            await expect(small.locator(".uptime .uplot")).to_have_count(2)
            await no_sideways_scroll(small)
            await small.screenshot(path=SHOTS / "services-375.png", full_page=True)
            await small.goto(f"{server}/services/checkout")
            await expect(small.locator(".uptime")).to_have_attribute("data-loading", "done")
            await no_sideways_scroll(small)
            await small.screenshot(path=SHOTS / "service-375.png", full_page=True)
            await small.goto(f"{server}/services/checkout/edit")
            await no_sideways_scroll(small)
            await small.screenshot(path=SHOTS / "service-edit-375.png", full_page=True)
            assert small_problems == [], small_problems
            await phone.close()


def status_of(engine, name: str) -> str | None:
    state = state_of(engine, name)
    return state.status if state is not None else None


async def test_check_now_has_the_monitor_check_at_once(
    server, browser, api, engine, temporal_client, settings, service
):
    """Check now brings the next check forward: the monitor's next window runs and records it (an hourly service's
    first check would otherwise come up to an hour later), and the page shows it without a reload."""
    url, _ = service
    settings = monitor_settings(settings)
    await register(api, "ledger", url, interval_seconds=3600)
    make_user(engine, "responder", username="oncall")
    async with monitoring(temporal_client, engine, settings):
        page = await browser.new_page()
        await log_in(page, server, "oncall", "/services/ledger")
        await expect(page.locator("[data-live-state]")).to_have_attribute("data-live-state", "live")
        await expect(page.locator("#service-results")).to_contain_text("No checks yet")
        await page.get_by_role("button", name="Check now").click()
        await expect(page.get_by_test_id("check-requested")).to_be_visible()
        await expect(page.locator('#service-results tr[data-result="up"]')).to_have_count(1, timeout=30_000)
        await expect(page.locator("#service-state .svc")).to_have_text(re.compile("up"))
    assert [r.status for r in results(engine, "ledger")] == ["up"]


async def test_maintenance_is_scheduled_and_ended_from_the_service_page(server, browser, engine, api, service):
    url, _ = service
    assert (
        await api.post("/api/services", json={"name": "checkout", "check": {"type": "http", "url": url}})
    ).is_success
    make_user(engine, "responder", username="planner")
    page = await browser.new_page()
    await log_in(page, server, "planner", "/services/checkout")
    windows = page.get_by_test_id("maintenance-windows")
    await expect(windows).to_contain_text("None now or coming")

    await page.click("text=Schedule maintenance")
    await page.select_option("#mw-duration", "2h")
    await page.fill("#mw-reason", "<b>db upgrade</b>")
    await page.click("[data-testid=maintenance-form] button[type=submit]")
    await page.wait_for_url(f"{server}/services/checkout")
    await expect(windows).to_contain_text("<b>db upgrade</b>")  # the reason is shown as text
    listed = (await api.get("/api/maintenance-windows", params={"service": "checkout"})).json()
    assert [(w["reason"], w["active"], w["created_by"]) for w in listed] == [("<b>db upgrade</b>", True, "planner")]
    length = datetime.fromisoformat(listed[0]["ends_at"]) - datetime.fromisoformat(listed[0]["starts_at"])
    assert length.total_seconds() == 2 * 3600

    # A start in the past whose window is already over: refused with the reason, nothing stored.
    await page.click("text=Schedule maintenance")
    await page.fill("#mw-start", "2020-01-01T10:00")
    await page.select_option("#mw-duration", "30m")
    await page.click("[data-testid=maintenance-form] button[type=submit]")
    await expect(page.locator("main")).to_contain_text("the window would be over already")
    assert len((await api.get("/api/maintenance-windows", params={"service": "checkout"})).json()) == 1

    await page.goto(f"{server}/services/checkout")
    await windows.get_by_role("button", name="End now").click()
    await page.wait_for_url(f"{server}/services/checkout")
    await expect(windows).to_contain_text("None now or coming")
    assert (await api.get("/api/maintenance-windows", params={"service": "checkout"})).json() == []
    with Session(engine) as session:
        actions = session.exec(
            select(AuditEvent.action, AuditEvent.actor)
            .where(AuditEvent.target_type == "maintenance_window")
            .order_by(col(AuditEvent.id))
        ).all()
    assert [tuple(a) for a in actions] == [("maintenance.create", "planner"), ("maintenance.end", "planner")]

    # A viewer sees neither form, and a forged POST is refused.
    make_user(engine, "viewer", username="onlooker")
    viewer = await browser.new_page()
    await log_in(viewer, server, "onlooker", "/services/checkout")
    await expect(viewer.get_by_test_id("maintenance-form")).to_have_count(0)
    forged = await viewer.request.post(f"{server}/services/checkout/maintenance", form={"duration": "1h"})
    assert forged.status == 403
