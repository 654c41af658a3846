"""/conversations in a real Chromium: every incident's conversation searched by keywords and by meaning, filtered by
agent, service and time, a page at a time; each result opens its message in its incident's chat view (its group
opened, the message marked), for a viewer too."""

from __future__ import annotations

from playwright.async_api import Page, expect

from core.embeddings import embedding_provider
from tests.factories import make_user
from tests.web.chat_rows import add_message, incident_with_conversation
from tests.web.conftest import log_in
from worker.indexer import EmbeddingIndexer


async def search(page: Page, **fields: str) -> None:
    form = page.get_by_test_id("conversation-search")
    for name in ("q", "semantic", "agent", "service", "since", "until"):
        await form.locator(f"[name={name}]").fill(fields.get(name, ""))
    await form.locator("button[type=submit]").click()
    await page.wait_for_load_state()


async def result_ids(page: Page) -> list[int]:
    items = page.get_by_test_id("search-result")
    return [int(i) for i in await items.evaluate_all("rs => rs.map(r => r.dataset.messageId)")]


async def test_search_filter_page_and_open_a_message_in_its_incident(server, browser, engine, settings, artifacts_dir):
    checkout, checkout_ids = incident_with_conversation(engine)
    mailer, mailer_ids = incident_with_conversation(engine, title="newsletter bounce", service="mailer")
    EmbeddingIndexer(engine, embedding_provider(settings)).backfill()
    make_user(engine, "viewer", username="vera")
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await log_in(page, server, "vera", f"/incidents/{checkout}")
    # The reader folded the logs step's group on the incident page earlier.
    await page.locator(".chat-group[data-key='s:logs:1:1'] > summary").click()
    await page.get_by_role("link", name="Conversations").click()
    await page.wait_for_url(f"{server}/conversations")
    await expect(page.get_by_test_id("search-result")).to_have_count(2 * len(checkout_ids))  # newest first

    await search(page, q="pool")
    await expect(page.get_by_test_id("search-filter")).to_contain_text("keywords pool")
    both = set(await result_ids(page))
    pool = {checkout_ids["logs_tool"], checkout_ids["logs"], checkout_ids["restarted"]}
    assert both == pool | {mailer_ids[k] for k in ("logs_tool", "logs", "restarted")}
    await search(page, q="pool", service="checkout")
    assert set(await result_ids(page)) == pool
    await expect(page.locator(".result-service").first).to_have_text("checkout")
    await search(page, agent="investigate_metrics")
    assert await result_ids(page) == [mailer_ids["metrics"], checkout_ids["metrics"]]
    await search(page, service="mailer", since="2026-11-30T12:00:03", until="2026-11-30T12:00:05")
    assert await result_ids(page) == [mailer_ids["failed"], mailer_ids["metrics"]]

    await search(page, semantic="postgres ran out of database connections", service="checkout")
    await expect(page.get_by_text("Closest in meaning first.")).to_be_visible()
    ranked = await result_ids(page)
    assert ranked[0] in pool and set(ranked) <= set(checkout_ids.values())
    scores = [float(s.split()[1]) for s in await page.locator(".search-result .msg-score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    await page.screenshot(path=str(artifacts_dir / "chat-search-desktop.png"), full_page=True)

    # Link-through: the message's incident, its folded group opened, the message marked and in view.
    target = checkout_ids["logs"]
    await page.locator(f"[data-message-id='{target}'] [data-testid=result-link]").click()
    await page.wait_for_url(f"{server}/incidents/{checkout}#message-{target}")
    message = page.locator(f"#message-{target}")
    await expect(message).to_have_class("message role-assistant is-target")
    await expect(page.locator(".chat-group[data-key='s:logs:1:1']")).to_have_attribute("open", "")
    await expect(message).to_be_in_viewport()
    assert await page.evaluate(f"document.querySelector('#message-{target}').matches(':target')")
    outline = await message.evaluate("m => getComputedStyle(m).outlineStyle")
    assert outline == "solid"

    # A phone's width.
    await page.set_viewport_size({"width": 375, "height": 800})
    await page.goto(f"{server}/conversations?q=pool")
    await expect(page.get_by_test_id("search-result").first).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    await page.screenshot(path=str(artifacts_dir / "chat-search-375.png"), full_page=True)


async def test_pages_of_results_and_a_link_to_a_message_older_than_the_chat_shows(server, browser, engine):
    incident, ids = incident_with_conversation(engine)
    extra = [
        add_message(engine, incident, f"heartbeat {n} from the probe", step="probe", seconds=60 + n) for n in range(205)
    ]
    make_user(engine, "viewer", username="vera")
    page = await browser.new_page()
    await log_in(page, server, "vera", "/conversations?q=heartbeat")
    seen: list[int] = []
    for _ in range(20):
        seen += await result_ids(page)
        following = page.get_by_test_id("next-page")
        if not await following.count():
            break
        await following.click()
        await page.wait_for_load_state()
        await expect(page.get_by_test_id("search-filter")).to_contain_text("keywords heartbeat")  # kept on every page
    assert sorted(seen) == sorted(extra) and len(seen) == len(set(seen))

    # The oldest heartbeat is not among the 200 the incident page shows: its link loads the messages around it.
    first = extra[0]
    await page.goto(f"{server}/incidents/{incident}#message-{first}")
    await page.wait_for_url(f"{server}/incidents/{incident}/conversation?around={first}#message-{first}")
    await expect(page.locator(f"#message-{first}")).to_have_class("message role-assistant is-target")
    await expect(page.locator(f"#message-{first}")).to_be_in_viewport()
    await expect(page.get_by_test_id("chat-filter")).to_contain_text(f"around message {first}")
    assert ids["logs"] < first
