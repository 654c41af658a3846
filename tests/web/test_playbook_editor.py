"""The playbook editor in a real Chromium against the real app (issue 23): a playbook with a parallel join and a
condition built in the form, saved, edited into a second version with a message; an invalid `when` shown inline
(while typing, and on save) with nothing saved; a viewer sees no edit buttons and a forged post is refused; XSS and
SSTI payloads stay inert; 375 px has no sideways page scroll. Screenshots: test-artifacts/playbook-*.png."""

from __future__ import annotations

from playwright.async_api import Page, expect
from sqlmodel import Session, col, select

from core.tables import PlaybookVersion
from tests.factories import make_user
from tests.web.conftest import log_in

WHEN = "steps.logs.status == 'completed'"


def stored(engine, playbook_id: str) -> list[PlaybookVersion]:
    with Session(engine) as session:
        query = select(PlaybookVersion).where(PlaybookVersion.playbook_id == playbook_id)
        return list(session.exec(query.order_by(col(PlaybookVersion.version))).all())


async def no_horizontal_overflow(page: Page) -> None:
    overflow = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    wide = await page.evaluate(
        """() => [...document.querySelectorAll('main *')]
            .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
            .slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)"""
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px: {wide}"


async def add_step(page: Page, count: int) -> None:
    """Press "Add a step" (the whole form posts back) and wait for the new step's fieldset."""
    await page.get_by_test_id("add-step").click()
    await expect(page.locator(f"#s{count - 1}")).to_be_visible()


async def build_triage(page: Page) -> None:
    """check → (logs, metrics) → merge (join all, when logs completed), typed into the editor."""
    await page.fill("#pb-id", "checkout")
    await page.fill("#pb-name", "Checkout down")
    await page.fill("#pb-incident_type", "checkout-down")
    await page.fill("#s0-id", "check")
    await page.fill("#s0-instructions", "Look at **checkout** for {{service_name}}")
    await expect(page.get_by_test_id("preview-0").locator("strong")).to_have_text("checkout")  # live preview
    for index, (step_id, deps) in enumerate([("logs", ["check"]), ("metrics", ["check"])], start=1):
        await add_step(page, index + 1)
        await page.fill(f"#s{index}-id", step_id)
        for dep in deps:
            await page.locator(f'#s{index} input[name="s{index}.depends_on"][value="{dep}"]').check()
    await add_step(page, 4)
    await page.fill("#s3-id", "merge")
    for dep in ("logs", "metrics"):
        await page.locator(f'#s3 input[name="s3.depends_on"][value="{dep}"]').check()
    await page.select_option("#s3-join", "all")
    await page.select_option("#s3-agent", "sleep")  # htmx swaps in sleep's params fields
    await page.fill('[name="s3.p.seconds"]', "0")


async def test_build_a_playbook_with_a_join_and_a_condition_then_a_second_version(
    server, browser, engine, artifacts_dir
):
    make_user(engine, "admin", username="ada")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    await log_in(page, server, "ada", "/playbooks")
    await page.get_by_test_id("new-playbook").click()
    await build_triage(page)
    # An invalid condition is flagged beside the field as it is typed (htmx), before any save.
    when = page.locator("#s3-when")
    await when.fill("steps.logs.status ==")
    error = page.locator('#s3 [data-field="s3.when"]')
    await expect(error).to_contain_text("does not parse")
    await when.fill(WHEN)
    await expect(page.get_by_test_id("when-ok")).to_be_visible()
    await expect(error).to_have_count(0)
    # The draft's graph follows the form.
    graph = page.get_by_test_id("draft-graph")
    await expect(graph.locator("[data-node]")).to_have_count(4)
    await expect(graph.locator('[data-node="merge"]')).to_contain_text("join all")
    await expect(graph.locator('[data-node="merge"]')).to_contain_text("when steps.logs.status")
    await page.screenshot(path=str(artifacts_dir / "playbook-editor-desktop.png"), full_page=True)
    await page.fill("#pb-message", "first cut")
    await page.get_by_test_id("save-playbook").click()
    await page.wait_for_url(f"{server}/playbooks/checkout?version=1&saved=1")
    await expect(page.get_by_test_id("saved-notice")).to_have_text("Saved as version 1.")

    graph = page.get_by_test_id("playbook-graph")
    await expect(graph.locator("[data-node]")).to_have_count(4)
    await expect(graph.locator('path[data-to="merge"]')).to_have_count(2)
    await expect(graph.locator('path[data-from="check"]')).to_have_count(2)
    await expect(page.get_by_test_id("when-merge")).to_have_text(WHEN)
    await expect(page.get_by_test_id("instructions-check").locator("strong")).to_have_text("checkout")
    [v1] = stored(engine, "checkout")
    merge = v1.definition["steps"][3]
    assert (merge["depends_on"], merge["join"]["strategy"], merge["when"]) == (["logs", "metrics"], "all", WHEN)
    assert merge["agent"] == "sleep" and merge["params"] == {"seconds": 0}

    await page.get_by_test_id("edit-playbook").click()
    await page.wait_for_url(f"{server}/playbooks/checkout/edit")
    await expect(page.locator("#s3-when")).to_have_value(WHEN)
    await page.fill("#pb-name", "Checkout down (v2)")
    await page.fill("#s1-timeout_seconds", "45")
    await page.fill("#pb-message", "renamed; logs get 45 s")
    await page.get_by_test_id("save-playbook").click()
    await page.wait_for_url(f"{server}/playbooks/checkout?version=2&saved=1")
    await expect(page.get_by_test_id("playbook-version")).to_have_text("v2")
    await expect(page.get_by_test_id("playbook-name")).to_have_text("Checkout down (v2)")
    versions = page.get_by_test_id("versions")
    await expect(versions.locator("li")).to_have_count(2)
    await expect(versions.locator('li[data-version="2"]')).to_contain_text("renamed; logs get 45 s")
    await expect(versions.locator('li[data-version="1"]')).to_contain_text("first cut")
    await page.screenshot(path=str(artifacts_dir / "playbook-view-desktop.png"), full_page=True)
    await page.get_by_test_id("diff-2").click()
    await expect(page.get_by_test_id("diff")).to_contain_text("+name: Checkout down (v2)")
    await page.screenshot(path=str(artifacts_dir / "playbook-diff-desktop.png"), full_page=True)
    assert [v.version for v in stored(engine, "checkout")] == [1, 2]
    assert dialogs == []


async def test_an_invalid_condition_is_shown_beside_its_field_on_save_and_nothing_is_saved(
    server, browser, engine, artifacts_dir
):
    make_user(engine, "admin", username="ada")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await log_in(page, server, "ada", "/playbooks/_new")
    await build_triage(page)
    await page.fill("#s3-when", "steps.logs.status == 'completed' &&")
    await page.fill("#pb-message", "kept after the refusal")
    await page.get_by_test_id("save-playbook").click()
    await expect(page.get_by_test_id("form-invalid")).to_be_visible()
    error = page.locator('#s3 [data-field="s3.when"]')
    await expect(error).to_contain_text("step merge: condition does not parse")
    await expect(page.locator("#s3-when")).to_have_attribute("aria-invalid", "true")
    # Nothing typed is lost.
    await expect(page.locator("#pb-name")).to_have_value("Checkout down")
    await expect(page.locator("#pb-message")).to_have_value("kept after the refusal")
    await expect(page.locator('#s3 input[name="s3.depends_on"][value="metrics"]')).to_be_checked()
    await expect(page.locator('[name="s3.p.seconds"]')).to_have_value("0")
    await error.scroll_into_view_if_needed()
    await page.screenshot(path=str(artifacts_dir / "playbook-editor-invalid.png"), full_page=False)
    assert stored(engine, "checkout") == []


async def test_a_viewer_sees_no_edit_buttons_and_a_forged_post_is_refused(server, browser, engine, api):
    steps = [{"id": "check", "agent": "noop"}]
    created = await api.post("/api/playbooks", json={"id": "checkout", "name": "Checkout", "steps": steps})
    assert created.status_code == 201, created.text
    make_user(engine, "viewer", username="vic")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await log_in(page, server, "vic", "/playbooks")
    await expect(page.get_by_test_id("playbook-list")).to_contain_text("Checkout")
    await expect(page.get_by_test_id("new-playbook")).to_have_count(0)
    await expect(page.get_by_test_id("edit-checkout")).to_have_count(0)
    await page.goto(f"{server}/playbooks/checkout")
    await expect(page.get_by_test_id("playbook-graph").locator("[data-node]")).to_have_count(1)
    for button in ("edit-playbook", "fork-playbook"):
        await expect(page.get_by_test_id(button)).to_have_count(0)
    # A forged post from the viewer's own logged-in page, with their valid CSRF token: 403.
    statuses = await page.evaluate(
        """async () => {
            const csrf = document.querySelector('input[name=csrf_token]').value;
            const post = (url, fields) => fetch(url, {method: 'POST', body: new URLSearchParams(
                {csrf_token: csrf, action: 'save', step_count: '1', 's0.id': 'x', 's0.agent': 'noop', ...fields})});
            return [
                (await post('/playbooks/_new', {id: 'forged', name: 'Forged'})).status,
                (await post('/playbooks/checkout/edit', {name: 'Taken over'})).status,
                (await post('/playbooks/checkout/restore', {version: '1'})).status,
            ];
        }"""
    )
    assert statuses == [403, 403, 403]
    assert [v.name for v in stored(engine, "checkout")] == ["Checkout"] and stored(engine, "forged") == []


async def test_xss_and_ssti_payloads_stay_inert(server, browser, engine, artifacts_dir):
    make_user(engine, "admin", username="ada")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    await log_in(page, server, "ada", "/playbooks/_new")
    name = '<img src=x onerror=alert("name")>'
    instructions = (
        '<script>alert("script")</script> <img src=x onerror=alert("img")> [link](javascript:alert("link")) '
        "{{7*7}} {{ ''.join(['a']) }} {% for x in range(3) %}loop{% endfor %} **bold**"
    )
    await page.fill("#pb-id", "xss")
    await page.fill("#pb-name", name)
    await page.fill("#s0-id", "check")
    await page.fill("#s0-instructions", instructions)
    preview = page.get_by_test_id("preview-0")
    await expect(preview.locator("strong")).to_have_text("bold")
    await expect(preview).to_contain_text("{{7*7}}")
    await page.get_by_test_id("save-playbook").click()
    await page.wait_for_url(f"{server}/playbooks/xss?version=1&saved=1")
    await expect(page.get_by_test_id("playbook-name")).to_have_text(name)  # as text
    shown = page.get_by_test_id("instructions-check")
    await expect(shown).to_contain_text("{{7*7}}")
    await expect(shown).to_contain_text("{% for x in range(3) %}loop{% endfor %}")
    await expect(shown).to_contain_text("{{ ''.join(['a']) }}")
    await expect(shown).not_to_contain_text("49")
    assert await page.locator("main img, main script").count() == 0
    assert await shown.locator("a").count() == 0  # a javascript: link is not a link
    await page.goto(f"{server}/playbooks")
    await expect(page.get_by_test_id("playbook-list")).to_contain_text(name)
    await page.goto(f"{server}/playbooks/xss/edit")
    await expect(page.locator("#pb-name")).to_have_value(name)
    await page.screenshot(path=str(artifacts_dir / "playbook-xss.png"), full_page=True)
    assert dialogs == []


async def test_375_px_wide_editor_and_view_do_not_scroll_sideways(server, browser, engine, api, artifacts_dir):
    steps = [
        {"id": "check", "agent": "noop", "instructions": "A long line " * 20},
        {"id": "logs", "agent": "noop", "depends_on": ["check"]},
        {"id": "metrics", "agent": "noop", "depends_on": ["check"]},
        {"id": "merge", "agent": "sleep", "depends_on": ["logs", "metrics"], "when": WHEN, "params": {"seconds": 0}},
    ]
    body = {"id": "checkout", "name": "Checkout down", "steps": steps, "variables": {"region": "eu-1"}}
    assert (await api.post("/api/playbooks", json=body)).status_code == 201
    make_user(engine, "admin", username="ada")
    page = await browser.new_page(viewport={"width": 375, "height": 800})
    await log_in(page, server, "ada", "/playbooks")
    await no_horizontal_overflow(page)
    await page.screenshot(path=str(artifacts_dir / "playbook-list-375.png"), full_page=True)
    await page.goto(f"{server}/playbooks/checkout")
    await expect(page.get_by_test_id("playbook-graph").locator("[data-node]")).to_have_count(4)
    await no_horizontal_overflow(page)
    await page.screenshot(path=str(artifacts_dir / "playbook-view-375.png"), full_page=True)
    await page.goto(f"{server}/playbooks/checkout/edit")
    await expect(page.locator("#s3-when")).to_have_value(WHEN)
    await no_horizontal_overflow(page)
    await page.screenshot(path=str(artifacts_dir / "playbook-editor-375.png"), full_page=True)
    await page.goto(f"{server}/playbooks/checkout/preview")
    await page.fill("#var-region", "us-2")
    await page.get_by_test_id("run-preview").click()
    await expect(page.get_by_test_id("preview")).to_contain_text("region=us-2")
    await expect(page.locator("#preview-merge")).to_contain_text("runs")  # logs is assumed to complete
    await no_horizontal_overflow(page)
    await page.screenshot(path=str(artifacts_dir / "playbook-preview-375.png"), full_page=True)
