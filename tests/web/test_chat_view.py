"""The chat view of an incident's conversation in a real Chromium on the real app: groups by step and attempt with
one colour and badge per agent, collapsing remembered per user, tool output folded, filters and semantic search
in the page, live appends that keep the reader's place, markdown that cannot run script, and a phone's width."""

from __future__ import annotations

from playwright.async_api import Page, expect

from core.embeddings import embedding_provider
from tests.factories import make_user
from tests.web.chat_rows import add_message, incident_with_conversation
from tests.web.conftest import log_in
from tests.web.test_live_pages import assert_not_reloaded, live, mark_page
from worker.indexer import EmbeddingIndexer


def group(page: Page, step: str, attempt: int = 1):
    return page.locator(f".chat-group[data-key='s:{step}:1:{attempt}']")


async def open_filter(page: Page) -> None:
    details = page.locator(".chat-filter")
    if not await details.evaluate("d => d.open"):
        await details.locator("summary").click()


async def test_groups_show_each_agent_by_colour_and_badge_and_remember_what_the_reader_folded(
    server, browser, engine, artifacts_dir
):
    incident, ids = incident_with_conversation(engine)
    make_user(engine, "viewer", username="vera")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await log_in(page, server, "vera", f"/incidents/{incident}")

    # One group per step and attempt: the retried restart has two; people, alerts and summaries are apart.
    keys = await page.locator(".chat-group").evaluate_all("gs => gs.map(g => g.dataset.key)")
    assert keys == [
        f"f:tool:{ids['alert']}",
        "s:logs:1:1",
        "s:metrics:1:1",
        "s:restart:1:1",
        f"f:people:{ids['operator']}",
        "s:restart:1:2",
        "s:verify:-:-",
    ]
    logs, metrics = group(page, "logs"), group(page, "metrics")
    logs_chip, metrics_chip = logs.locator(".agent-chip"), metrics.locator(".agent-chip")
    await expect(logs_chip).to_have_text("IL investigate_logs")  # badge + name, never colour alone
    await expect(metrics_chip).to_have_text("IM investigate_metrics")
    await expect(logs_chip.locator(".agent-badge")).to_be_visible()
    logs_class = await logs_chip.get_attribute("class")
    metrics_class = await metrics_chip.get_attribute("class")
    assert logs_class != metrics_class and "agent-c" in logs_class and "agent-c" in metrics_class
    inks = await page.evaluate(
        """() => [...document.querySelectorAll('.chat-group.group-step .agent-chip')]
                 .map(c => getComputedStyle(c).color)"""
    )
    assert inks[0] != inks[1]  # the two investigators' colours differ on screen
    await expect(logs).to_contain_text("step logs")
    await expect(logs).to_contain_text("attempt 1")
    await expect(logs.locator("[data-count]")).to_have_text("2 messages")
    await expect(logs.locator(".group-time")).to_have_text("12:00:01–12:00:02")
    await expect(group(page, "restart", 2)).to_contain_text("attempt 2")
    await expect(group(page, "restart", 1).locator(".group-failed")).to_have_text("failed")

    # Tool output is folded until asked for; the agent's finding is open, its markdown rendered.
    tool = page.locator(f"#message-{ids['logs_tool']}")
    await expect(tool.locator("summary")).to_contain_text("Top error lines, checkout.log:")
    await expect(tool.locator("pre")).to_be_hidden()
    await expect(page.locator(f"#message-{ids['logs']} .content strong")).to_have_text("42")
    # People and summaries do not look like agents.
    operator = page.locator(f"#message-{ids['operator']}")
    await expect(operator).to_have_class("message role-user")
    await expect(operator.locator(".meta")).to_contain_text("oscar operator")
    summary = page.locator(f"#message-{ids['summary']}")
    await expect(summary.locator(".meta")).to_contain_text("Summary of 3 earlier messages")
    operator_bg, agent_bg = await page.evaluate(
        f"""() => [getComputedStyle(document.getElementById('message-{ids["operator"]}')).backgroundColor,
                  getComputedStyle(document.getElementById('message-{ids["logs"]}')).backgroundColor]"""
    )
    assert operator_bg != agent_bg
    await page.screenshot(path=str(artifacts_dir / "chat-desktop.png"), full_page=True)

    # The reader folds a group and opens a tool message: both stay so after a reload, for this user.
    await metrics.locator("summary").click()
    await tool.locator("summary").click()
    await expect(tool.locator("pre")).to_be_visible()
    await page.reload()
    await expect(group(page, "metrics")).not_to_have_attribute("open", "")
    await expect(page.locator(f"#message-{ids['logs_tool']} pre")).to_be_visible()
    await expect(group(page, "logs")).to_have_attribute("open", "")
    assert f"agent-monitor:chat:vera:{incident}" in await page.evaluate("Object.keys(localStorage)")
    await group(page, "metrics").locator("summary").click()  # unfolded again: remembered too
    await page.reload()
    await expect(group(page, "metrics")).to_have_attribute("open", "")

    # A phone: nothing wider than the screen.
    await page.set_viewport_size({"width": 375, "height": 800})
    await page.reload()
    await expect(page.locator(".chat-log")).to_be_visible()
    await open_filter(page)  # the filter form too
    await page.locator(f"#message-{ids['logs_tool']} pre").scroll_into_view_if_needed()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    await page.locator("#chat").scroll_into_view_if_needed()
    await page.screenshot(path=str(artifacts_dir / "chat-375.png"), full_page=True)


async def test_filter_by_agent_keyword_and_time_in_place_and_without_javascript(server, browser, engine):
    incident, ids = incident_with_conversation(engine)
    make_user(engine, "viewer", username="vera")
    page = await browser.new_page()
    await log_in(page, server, "vera", f"/incidents/{incident}")
    await mark_page(page)
    messages = page.locator(".chat-log .message")
    await expect(messages).to_have_count(len(ids))

    await open_filter(page)
    await page.fill("#chat input[name=agent]", "investigate_logs")
    await page.click("#chat button[type=submit]")
    await expect(page.get_by_test_id("chat-filter")).to_contain_text("agent investigate_logs")
    await expect(messages).to_have_count(2)
    await expect(page.locator(".chat-log .agent-chip")).to_have_text(["IL investigate_logs"])

    await open_filter(page)
    await page.fill("#chat input[name=agent]", "")
    await page.fill("#chat input[name=q]", "pool")
    await page.click("#chat button[type=submit]")
    await expect(page.get_by_test_id("chat-filter")).to_contain_text("keywords pool")
    ids_shown = await messages.evaluate_all("ms => ms.map(m => Number(m.id.split('-')[1]))")
    assert ids_shown == [ids["logs_tool"], ids["logs"], ids["restarted"]]

    await open_filter(page)
    await page.fill("#chat input[name=q]", "")
    await page.fill("#chat input[name=since]", "2026-11-30T12:00:03")
    await page.fill("#chat input[name=until]", "2026-11-30T12:00:05")
    await page.click("#chat button[type=submit]")
    await expect(page.get_by_test_id("chat-filter")).to_contain_text("from")
    ids_shown = await messages.evaluate_all("ms => ms.map(m => Number(m.id.split('-')[1]))")
    assert ids_shown == [ids["metrics"], ids["failed"]]

    await page.get_by_test_id("chat-clear").click()
    await expect(messages).to_have_count(len(ids))
    await expect(page.get_by_test_id("chat-filter")).to_have_count(0)
    await assert_not_reloaded(page)  # htmx swapped the chat in place

    # Without JavaScript the same form lands on the conversation's own page.
    context = await browser.new_context(java_script_enabled=False)
    plain = await context.new_page()
    await log_in(plain, server, "vera", f"/incidents/{incident}")
    await plain.locator(".chat-filter summary").click()
    await plain.fill("#chat input[name=step]", "restart")
    await plain.click("#chat button[type=submit]")
    await plain.wait_for_url(f"**/incidents/{incident}/conversation?**")
    await expect(plain.locator(".chat-log .message")).to_have_count(2)
    await expect(plain.locator(".chat-group")).to_have_count(2)  # the restart's two attempts
    await plain.get_by_test_id("chat-clear").click()
    await plain.wait_for_url(f"**/incidents/{incident}#conversation-title")
    await context.close()


async def test_semantic_search_over_this_incident_and_a_clear_answer_when_it_is_off(
    server, browser, engine, settings, app, client_as
):
    incident, ids = incident_with_conversation(engine)
    other, _ = incident_with_conversation(engine, title="elsewhere", service="mailer")
    EmbeddingIndexer(engine, embedding_provider(settings)).backfill()
    make_user(engine, "viewer", username="vera")
    page = await browser.new_page()
    await log_in(page, server, "vera", f"/incidents/{incident}")
    await open_filter(page)
    await page.fill("#chat input[name=semantic]", "the database ran out of connections")
    await page.click("#chat button[type=submit]")
    await expect(page.get_by_test_id("chat-filter")).to_contain_text("meaning")
    await expect(page.locator(".chat-note")).to_contain_text("closest in meaning")
    scores = await page.locator(".chat-log .msg-score").all_inner_texts()
    assert scores and all(s.startswith("match 0.") for s in scores)
    shown = await page.locator(".chat-log .message").evaluate_all("ms => ms.map(m => Number(m.id.split('-')[1]))")
    assert set(shown) == set(ids.values())  # this incident's only, though the other has the same words
    best = await page.evaluate(
        """() => [...document.querySelectorAll('.chat-log .message')]
                 .map(m => [m.id, parseFloat((m.querySelector('.msg-score') || {}).textContent.slice(6))])
                 .sort((a, b) => b[1] - a[1])[0][0]"""
    )
    assert best in (f"message-{ids['logs_tool']}", f"message-{ids['restarted']}", f"message-{ids['logs']}")

    app.state.settings.embedding_provider = "off"
    await open_filter(page)
    await page.click("#chat button[type=submit]")
    await expect(page.get_by_test_id("chat-problem")).to_contain_text("Semantic search is off")
    viewer = await client_as("viewer")
    answer = await viewer.get(f"/incidents/{incident}/conversation", params={"semantic": "connections"})
    assert answer.status_code == 200 and "EMBEDDING_PROVIDER=off" in answer.text
    assert other != incident


async def test_new_messages_are_appended_live_keeping_the_readers_place(server, browser, engine, api):
    incident, ids = incident_with_conversation(engine)
    for n in range(30):  # enough for the log to scroll
        add_message(engine, incident, f"observation {n}", step=f"probe{n % 3}", agent="verify", seconds=10 + n)
    make_user(engine, "viewer", username="vera")
    page = await browser.new_page(viewport={"width": 1280, "height": 700})
    await log_in(page, server, "vera", f"/incidents/{incident}")
    await live(page)
    await mark_page(page)
    await group(page, "metrics").locator("summary").click()  # folded by the reader
    log = page.locator(".chat-log")
    await page.evaluate("document.querySelector('.chat-log').scrollIntoView()")
    await page.evaluate("window.scrollBy(0, 40)")
    await log.evaluate("l => { l.scrollTop = 120; }")
    before = await page.evaluate("[window.scrollY, document.querySelector('.chat-log').scrollTop]")
    assert before[0] > 0 and before[1] == 120

    # An agent's message for a step already shown (no event of its own), then an operator's (an event): both come.
    late = add_message(engine, incident, "late finding for logs", seconds=100)
    posted = await api.post(f"/api/incidents/{incident}/messages", json={"content": "Looking at **the pool**"})
    assert posted.status_code == 201, posted.text
    await expect(page.locator(f"#message-{posted.json()['id']}")).to_be_visible()
    await expect(group(page, "logs").locator(f"#message-{late}")).to_have_count(1)  # into its step's group
    await expect(group(page, "logs").locator("[data-count]")).to_have_text("3 messages")
    after = await page.evaluate("[window.scrollY, document.querySelector('.chat-log').scrollTop]")
    assert after == before  # the reader's place, in the window and in the log
    await expect(group(page, "metrics")).not_to_have_attribute("open", "")  # still folded
    assert await page.locator(".chat-log .message").count() == len(ids) + 30 + 2
    await assert_not_reloaded(page)

    # At the bottom of the log, the reader follows what arrives.
    await log.evaluate("l => { l.scrollTop = l.scrollHeight; }")
    again = await api.post(f"/api/incidents/{incident}/messages", json={"content": "and now?"})
    await expect(page.locator(f"#message-{again.json()['id']}")).to_be_in_viewport()

    # While a filter is on nothing is appended; the page says how much arrived.
    await open_filter(page)
    await page.fill("#chat input[name=q]", "pool")
    await page.click("#chat button[type=submit]")
    await expect(page.get_by_test_id("chat-filter")).to_be_visible()
    shown = await page.locator(".chat-log .message").count()
    third = await api.post(f"/api/incidents/{incident}/messages", json={"content": "pool is fine now"})
    await expect(page.get_by_test_id("chat-new")).to_contain_text("1 new message")
    await expect(page.locator(f"#message-{third.json()['id']}")).to_have_count(0)
    assert await page.locator(".chat-log .message").count() == shown
    await assert_not_reloaded(page)


HOSTILE = [
    "<script>window.__xss = 1</script>script tag",
    '<img src=x onerror="window.__xss = 1"> image tag',
    "[click me](javascript:window.__xss=1) and <a href='javascript:window.__xss=1'>raw link</a>",
    '<svg onload="window.__xss = 1"></svg> svg',
]


async def test_hostile_markdown_stays_inert(server, browser, engine):
    incident, _ = incident_with_conversation(engine)
    for n, content in enumerate(HOSTILE):
        add_message(engine, incident, content, seconds=20 + n)
    add_message(engine, incident, HOSTILE[1], role="tool", seconds=30)
    add_message(engine, incident, HOSTILE[0], agent=None, step=None, role="user", seconds=31, meta={"author": "x"})
    make_user(engine, "viewer", username="vera")
    page = await browser.new_page()
    await log_in(page, server, "vera", f"/incidents/{incident}")
    await page.locator(".chat-log details:not([open])").evaluate_all("ds => ds.forEach(d => { d.open = true; })")
    await expect(page.locator(".chat-log")).to_contain_text("script tag")
    await expect(page.locator(".chat-log")).to_contain_text("<img src=x onerror")  # shown as text
    chat = page.locator(".chat-log")
    assert await chat.locator("script, img, svg, iframe, [onerror], [onload]").count() == 0
    hrefs = await chat.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href') || '')")
    assert not [h for h in hrefs if h.lower().startswith("javascript")]
    await expect(chat.get_by_text("click me")).to_be_visible()  # the link's text stays, not its target
    assert await page.evaluate("window.__xss") is None

    search = await browser.new_page()
    await log_in(search, server, "vera", "/conversations?q=tag")
    await expect(search.get_by_test_id("search-result")).to_have_count(4)
    results = search.get_by_test_id("search-results")
    assert await results.locator("script, img, svg, [onerror], [onload]").count() == 0
    hrefs = await results.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href') || '')")
    assert not [h for h in hrefs if h.lower().startswith("javascript")]
    assert await search.evaluate("window.__xss") is None
