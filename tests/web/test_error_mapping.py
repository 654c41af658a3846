"""One error, one status: a domain error (core/errors.py) answers the same status through the API (JSON) and
through a page or form (the problem page, with the message and a way back)."""

from __future__ import annotations

import pytest

from tests.api.incident_rows import insert_incident

SAME_ORIGIN = {"referer": "http://testserver/incidents"}


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("refused move", 409, "it can go to"),
        ("unknown assignee", 422, "user 999999 does not exist"),
        ("unknown incident", 404, "incident 999999999 does not exist"),
    ],
)
async def test_a_domain_error_answers_the_same_status_from_the_api_and_the_pages(api, engine, case, status, message):
    incident_id = insert_incident(engine, status="closed")
    if case == "refused move":
        through_api = await api.post(f"/api/incidents/{incident_id}/status", json={"status": "in_progress"})
        through_page = await api.post(f"/incidents/{incident_id}/status", data={"status": "in_progress"},
                                      headers=SAME_ORIGIN)  # fmt: skip
    elif case == "unknown assignee":
        through_api = await api.put(f"/api/incidents/{incident_id}/assignee", json={"user_id": 999999})
        through_page = await api.post(f"/incidents/{incident_id}/assignee", data={"user_id": "999999"},
                                      headers=SAME_ORIGIN)  # fmt: skip
    else:
        through_api = await api.get("/api/incidents/999999999")
        through_page = await api.get("/incidents/999999999", headers=SAME_ORIGIN)

    assert through_api.status_code == through_page.status_code == status, (through_api.text, through_page.text[:300])
    assert message in through_api.json()["detail"]
    assert through_page.headers["content-type"].startswith("text/html")
    assert message in through_page.text
    assert 'href="/incidents"' in through_page.text  # back where the user came from


async def test_a_problem_page_without_a_referer_links_to_the_parent(api, engine):
    incident_id = insert_incident(engine, status="closed")
    response = await api.post(f"/incidents/{incident_id}/status", data={"status": "in_progress"})
    assert response.status_code == 409
    assert f'href="/incidents/{incident_id}"' in response.text


async def test_a_422_from_a_service_has_the_shape_of_schema_validation(api, engine):
    incident_id = insert_incident(engine)
    response = await api.put(f"/api/incidents/{incident_id}/assignee", json={"user_id": 999999})
    assert response.status_code == 422
    body = response.json()
    assert body["errors"] and body["errors"][0]["message"] and body["detail"]
