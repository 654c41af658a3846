"""The public status page (issue 21) on real Postgres, without credentials: a route walker follows every link from
/status and its JSON and finds no private data (no internal service name, URL, error, incident title, comment or
author, no link into the app); component statuses in status-page words; 90 daily bars from the day rollups; only
public updates of public services' incidents, escaped; 429 with Retry-After past the per-client rate; ETag and 304;
the service's `public` listing through the API; public updates through the API (who may, which incidents)."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from core.collaboration import IncidentComment
from core.monitoring import MaintenanceWindow
from core.tables import Incident, utcnow
from services.status_page import Day, component_status, page_indicator
from tests.workflows.rollup_rows import add_service, result, write
from web.pages.status_page import StatusPageState, TokenBucket

XSS = '<script>alert("pwned")</script><img src=x onerror=alert(2)>'
# Everything the public must never read, whatever the page or the JSON.
PRIVATE = [
    "checkout-eu", "checkout-us", "search-internal", "billing-db",  # internal service names
    "10.0.0.7", "http://10.", "/health",  # check URLs
    "connection refused to 10.9.9.9", "HTTP 503 from",  # errors
    "checkout-eu is down", "rotate the payment keys", "stack trace", "SECRET-COMMENT", "old outage title",
    "oncall-alice",  # incident titles, descriptions, comments, the responders' names
]  # fmt: skip


def listing(name: str, group: str | None = None) -> str:
    import json

    return json.dumps({"public": {"name": name, "group": group}})


def seed(engine: Engine) -> dict[str, int]:
    """Checkout (two services, one down: partial outage) and Search (degraded) are public; billing-db is not.
    checkout-eu has an active incident with public updates and one without; search-internal one resolved 2 days ago
    (a public update: past) and one 10 days ago (not shown)."""
    now = utcnow()
    eu, us, search, billing = (add_service(engine, n) for n in ("checkout-eu", "checkout-us", "search-internal",
                                                                 "billing-db"))  # fmt: skip
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    two_days_ago = today - timedelta(days=2)
    write(engine, [result(eu, two_days_ago + timedelta(minutes=i), "down" if i < 5 else "up") for i in range(10)])
    write(engine, [result(eu, today + timedelta(minutes=i), "up") for i in range(3)])
    write(engine, [result(us, today + timedelta(minutes=i), "up") for i in range(4)])
    write(engine, [result(billing, today + timedelta(minutes=i), "down") for i in range(2)])
    with engine.begin() as conn:
        for name, public in (("checkout-eu", listing("Checkout", "Shop")), ("checkout-us", listing("Checkout", "Shop")),
                             ("search-internal", listing("Search"))):  # fmt: skip
            conn.execute(text("UPDATE services SET config = config || CAST(:p AS jsonb) WHERE name = :n"),
                         {"p": public, "n": name})  # fmt: skip
        states = {
            eu.service_id: ("down", "HTTP 503 from http://10.0.0.7/checkout-eu/health"),
            us.service_id: ("up", None),
            search.service_id: ("degraded", "slow"),
            billing.service_id: ("down", "connection refused to 10.9.9.9"),
        }
        for sid, (status_, error) in states.items():
            conn.execute(text("UPDATE service_states SET status = :s, last_error = :e WHERE service_id = :i"),
                         {"s": status_, "e": error, "i": sid})  # fmt: skip
    with Session(engine) as session:
        active = Incident(title="checkout-eu is down: HTTP 503 from http://10.0.0.7/checkout-eu/health",
                          description="stack trace: ...", service="checkout-eu", severity="P1",
                          incident_type="service_down", created_at=now - timedelta(minutes=30))  # fmt: skip
        quiet = Incident(title="rotate the payment keys", service="checkout-eu", severity="P3",
                         created_at=now - timedelta(minutes=20))  # fmt: skip
        recent = Incident(title="search-internal slow", service="search-internal", severity="P4", status="resolved",
                          created_at=now - timedelta(days=2, hours=1), resolved_at=now - timedelta(days=2))  # fmt: skip
        old = Incident(title="old outage title", service="search-internal", severity="P2", status="resolved",
                       created_at=now - timedelta(days=10, hours=1), resolved_at=now - timedelta(days=10))  # fmt: skip
        billing_incident = Incident(title="billing-db is down", service="billing-db", severity="P1")
        session.add_all([active, quiet, recent, old, billing_incident])
        session.flush()
        session.add(IncidentComment(incident_id=active.id, author="oncall-alice", body="SECRET-COMMENT"))
        session.commit()
        return {"active": active.id, "quiet": quiet.id, "recent": recent.id, "old": old.id,
                "billing": billing_incident.id}  # fmt: skip


async def post_update(client: httpx.AsyncClient, incident_id: int, status: str, body: str) -> httpx.Response:
    return await client.post(f"/api/incidents/{incident_id}/public-updates", json={"status": status, "body": body})


async def seeded(app, engine: Engine, client_as) -> dict[str, int]:
    ids = seed(engine)
    alice = await client_as("responder", "oncall-alice")
    for incident, status_, body in ((ids["active"], "investigating", "Payments may fail for some customers."),
                                    (ids["active"], "identified", XSS),
                                    (ids["recent"], "resolved", "Search is fast again."),
                                    (ids["old"], "resolved", "Ten days ago.")):  # fmt: skip
        answer = await post_update(alice, incident, status_, body)
        assert answer.status_code == 201, answer.text
    app.state.status_page = StatusPageState(cache_seconds=0)
    return ids


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.forms = 0
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.forms += tag == "form"
        self.scripts += tag == "script"
        for name, value in attrs:
            if name in ("href", "src", "action") and value:
                self.links.append(value)


async def test_route_walker_finds_nothing_private(app, engine, client_as, anonymous) -> None:
    await seeded(app, engine, client_as)
    seen: dict[str, httpx.Response] = {}
    queue = ["/status", "/status/api/summary.json"]
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        answer = await anonymous.get(path)
        seen[path] = answer
        assert answer.status_code == 200, f"{path}: {answer.status_code}"  # no redirect to /login: nothing private
        if answer.headers["content-type"].startswith("text/html"):
            parser = Links()
            parser.feed(answer.text)
            assert parser.forms == 0 and parser.scripts == 0, path  # read-only, and no JavaScript needed
            for link in parser.links:
                parts = urlsplit(urljoin(f"http://testserver{path}", link))
                assert parts.netloc == "testserver", f"{path} links off-site: {link}"
                queue.append(parts.path)
    assert set(seen) == {"/status", "/status/api/summary.json", "/static/app.css", "/static/favicon.svg"}
    for path, answer in seen.items():
        for secret in PRIVATE:
            assert secret not in answer.text, f"{path} shows {secret!r}"
        links = re.findall(r'(?:href|src|action)="([^"]*)"', answer.text)
        assert not [link for link in links if link.startswith(("/api/", "/incidents", "/services", "/login"))]
    assert "<script>alert" not in seen["/status"].text  # the public update stays text
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in seen["/status"].text
    assert seen["/status"].headers["content-security-policy"].startswith("default-src 'self'; script-src 'self'")


async def test_statuses_bars_and_public_updates(app, engine, client_as, anonymous) -> None:
    ids = await seeded(app, engine, client_as)
    body = (await anonymous.get("/status/api/summary.json")).json()
    assert body["status"] == {"indicator": "major", "description": "Partial system outage"}
    components = {c["name"]: c for c in body["components"]}
    assert set(components) == {"Checkout", "Search"}  # billing-db is not listed; two services are one component
    assert (components["Checkout"]["group"], components["Checkout"]["status"]) == ("Shop", "partial_outage")
    assert (components["Search"]["group"], components["Search"]["status"]) == (None, "degraded_performance")
    days = components["Checkout"]["days"]
    assert len(days) == 90 and days[-1]["date"] == utcnow().date().isoformat()
    assert (days[-1]["checks"], days[-1]["down"], days[-1]["availability"]) == (7, 0, 1.0)  # both services' checks
    assert (days[-3]["checks"], days[-3]["down"], days[-3]["availability"]) == (10, 5, 0.5)
    assert days[0]["checks"] == 0 and days[0]["availability"] is None
    assert components["Checkout"]["availability_90d"] == round(12 / 17, 6)
    # Only incidents with a public update; of them only the updates' texts, newest first.
    [active] = body["incidents"]
    assert active["components"] == ["Checkout"] and active["status"] == "identified" and active["resolved_at"] is None
    assert [u["body"] for u in active["updates"]] == [XSS, "Payments may fail for some customers."]
    [past] = body["past_incidents"]
    assert past["updates"][0]["body"] == "Search is fast again." and past["resolved_at"]

    page = (await anonymous.get("/status")).text
    for said in ("70.59 % over 90 days", "Partial system outage", "Partial outage", "Degraded performance"):
        assert said in page, said
    checkout = page[page.index('data-status="partial_outage"') :].split("</li>")[0]
    bars = re.findall(r'<span class="status-day status-day-(\w+)" title="([^"]+)"', checkout)
    assert len(bars) == 90
    assert bars[-1][0] == "ok" and "(today, so far): 100 % available, 7 checks passed" in bars[-1][1]
    assert bars[-3] == ("major", bars[-3][1]) and "50.00 % available, 5 of 10 checks failed" in bars[-3][1]
    assert bars[0] == ("none", bars[0][1]) and bars[0][1].endswith(": no data")
    assert page.count('data-testid="public-incident"') == 2 and "Ten days ago." not in page

    # The update taken off the page (a mistake) is gone from it; a maintenance window says so.
    alice = await client_as("responder")
    [xss] = [u for u in (await alice.get(f"/api/incidents/{ids['active']}/public-updates")).json() if u["body"] == XSS]
    assert (await alice.delete(f"/api/incidents/{ids['active']}/public-updates/{xss['id']}")).status_code == 204
    with Session(engine) as session:
        now = utcnow()
        session.add(MaintenanceWindow(service="search-internal", starts_at=now - timedelta(minutes=1),
                                      ends_at=now + timedelta(hours=1)))  # fmt: skip
        session.commit()
    body = (await anonymous.get("/status/api/summary.json")).json()
    assert [u["status"] for u in body["incidents"][0]["updates"]] == ["investigating"]
    assert {c["name"]: c["status"] for c in body["components"]}["Search"] == "under_maintenance"


async def test_public_updates_api_who_and_which(app, engine, client_as) -> None:
    ids = seed(engine)
    viewer, responder = await client_as("viewer"), await client_as("responder")
    assert (await post_update(viewer, ids["active"], "investigating", "x")).status_code == 403
    refused = await post_update(responder, ids["billing"], "investigating", "Billing is down.")
    assert refused.status_code == 422 and "not on the public status page" in refused.text
    blank = await post_update(responder, ids["active"], "investigating", "   ")
    assert blank.status_code == 422 and "body" in blank.text
    assert (await post_update(responder, ids["active"], "fixed", "x")).status_code == 422
    assert (await post_update(responder, 10**12, "investigating", "x")).status_code == 404
    posted = await post_update(responder, ids["active"], "monitoring", "A fix is out.")
    assert posted.status_code == 201 and posted.json()["status"] == "monitoring"
    listed = (await viewer.get(f"/api/incidents/{ids['active']}/public-updates")).json()
    assert [u["body"] for u in listed] == ["A fix is out."]
    timeline = (await viewer.get(f"/api/incidents/{ids['active']}/timeline")).json()["items"]
    assert any(e["kind"] == "public_update.posted" and e["data"]["excerpt"] == "A fix is out." for e in timeline)


async def test_rate_limit_answers_429_with_retry_after(app, engine, anonymous) -> None:
    app.state.status_page = StatusPageState(limiter=TokenBucket(rate=0.5, burst=3))
    codes = [(await anonymous.get("/status")).status_code for _ in range(3)]
    limited = await anonymous.get("/status/api/summary.json")
    assert codes == [200, 200, 200] and limited.status_code == 429
    assert limited.headers["retry-after"] == "2" and limited.json() == {"detail": "too many requests: try again in 2 s"}
    assert "no-store" in limited.headers["cache-control"]  # a refusal is not cached
    # Another client address has its own bucket.
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("203.0.113.9", 4000)),
                              base_url="http://testserver")  # fmt: skip
    async with other:
        assert (await other.get("/status")).status_code == 200


def test_token_bucket_refills_and_forgets_idle_clients() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=2, keep=3, clock=lambda: now[0])
    assert [bucket.take("a") for _ in range(3)] == [0.0, 0.0, 0.5]
    now[0] = 0.5  # one token back
    assert bucket.take("a") == 0.0 and bucket.take("a") == 0.5
    for key in "bcd":
        bucket.take(key)
    assert list(bucket.buckets) == ["b", "c", "d"]  # the longest idle forgotten first


async def test_etag_and_304(app, engine, client_as, anonymous) -> None:
    await seeded(app, engine, client_as)
    app.state.status_page = StatusPageState(cache_seconds=60)
    for path in ("/status", "/status/api/summary.json"):
        first = await anonymous.get(path)
        assert first.headers["cache-control"] == "public, max-age=30"
        etag = first.headers["etag"]
        again = await anonymous.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        assert (await anonymous.get(path, headers={"If-None-Match": '"other"'})).status_code == 200
    before = (await anonymous.get("/status/api/summary.json")).headers["etag"]
    app.state.status_page.rendered.clear()  # as when the process's CACHE_SECONDS are over
    with engine.begin() as conn:
        conn.execute(text("UPDATE service_states SET status = 'up'"))
    changed = await anonymous.get("/status/api/summary.json", headers={"If-None-Match": before})
    assert changed.status_code == 200 and changed.json()["status"]["indicator"] == "none"


async def test_the_title_is_a_setting_shown_as_text(app, engine, client_as, anonymous) -> None:
    await seeded(app, engine, client_as)
    app.state.status_page = StatusPageState(cache_seconds=0)
    default = (await anonymous.get("/status")).text
    assert "<title>Partial system outage · Service status</title>" in default
    settings = app.state.settings
    app.state.settings = settings.model_copy(update={"status_page_title": "Acme <status>"})
    try:
        page = (await anonymous.get("/status")).text
    finally:
        app.state.settings = settings
    assert '<p class="status-brand">Acme &lt;status&gt;</p>' in page
    assert "<title>Partial system outage · Acme &lt;status&gt;</title>" in page


async def test_the_service_listing_is_validated_and_returned(api) -> None:
    base = {"name": "shop", "check": {"type": "http", "url": "http://10.0.0.7:8080/health"}}
    for public, field in (({"name": "  "}, "public.name"), ({"name": "Shop", "url": "x"}, "public.url"),
                          ({"name": "Sh\u202eop"}, "public.name"), ({"name": "x" * 101}, "public.name")):  # fmt: skip
        answer = await api.post("/api/services", json={**base, "public": public})
        assert answer.status_code == 422, answer.text
        assert field in {e["field"] for e in answer.json()["errors"]}, answer.text
    created = await api.post("/api/services", json={**base, "public": {"name": " Web\nshop ", "group": "Shop"}})
    assert created.status_code == 201 and created.json()["public"] == {"name": "Web shop", "group": "Shop"}
    assert (await api.get("/api/services/shop")).json()["public"] == {"name": "Web shop", "group": "Shop"}


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        (["up", "up"], "operational"),
        (["up", "down"], "partial_outage"),
        (["down", "down"], "major_outage"),
        (["down", "paused"], "major_outage"),
        (["up", "degraded"], "degraded_performance"),
        (["maintenance"], "under_maintenance"),
        (["up", "maintenance"], "under_maintenance"),
        (["maintenance", "down"], "partial_outage"),
        (["paused", "unknown"], "unknown"),
    ],
)
def test_component_status(members, expected) -> None:
    assert component_status(members) == expected


def test_page_indicator_and_day_levels() -> None:
    assert page_indicator(["operational", "unknown"]) == "none"
    assert page_indicator(["major_outage", "major_outage"]) == "critical"
    assert page_indicator(["major_outage", "operational"]) == "major"
    assert page_indicator(["degraded_performance", "under_maintenance"]) == "minor"
    assert page_indicator([]) == "unknown"
    today = utcnow().date()
    assert Day(today, checks=1000, up=999, down=1).level == "ok"
    assert Day(today, checks=100, up=99, down=1).level == "minor"
    assert Day(today, checks=100, up=98, down=2).level == "major"
    assert Day(today, checks=5, maintenance=5).level == "maintenance"
    assert Day(today).level == "none"
