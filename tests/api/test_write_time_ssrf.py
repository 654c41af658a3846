"""The SSRF guard at write time: a TCP check's host and an incident's service_url that name loopback, cloud
metadata or a denied network are refused with a 422 naming the field, as a check URL is, instead of being
stored and refused only when an agent connects. Host names are not resolved here (the guard checks them at
connect time), and OUTBOUND_ALLOW_LOOPBACK still lets loopback through."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from core.services import Service
from core.tables import Incident


def tcp_service(host: str, name: str = "postgres") -> dict[str, Any]:
    return {"name": name, "check": {"type": "tcp", "host": host, "port": 5432}}


@pytest.fixture
def loopback_refused(settings):
    """Production's default: the tests' settings allow loopback for their local peers."""
    settings.outbound_allow_loopback = False


@pytest.fixture
def ten_denied(settings):
    settings.outbound_deny_networks = ["10.0.0.0/8"]


def rows(engine, table) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(table)).one()


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("169.254.169.254", "169.254.169.254 is a link-local/cloud-metadata address"),
        ("[fd00:ec2::254]", "fd00:ec2::254 is a link-local/cloud-metadata address"),
        ("2852039166", "2852039166 resolves to 169.254.169.254"),
        ("0.0.0.0", "0.0.0.0 is an unspecified address"),
    ],
)
async def test_a_tcp_check_on_metadata_is_refused_even_with_loopback_allowed(api, engine, host, reason):
    answer = await api.post("/api/services", json=tcp_service(host))
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "check.host"
    assert answer.json()["errors"][0]["message"].startswith(reason)
    assert rows(engine, Service) == 0


async def test_a_tcp_check_on_loopback_is_refused_unless_allowed(loopback_refused, api, engine, settings):
    for host in ("127.0.0.1", "[::1]", "localhost"):
        answer = await api.post("/api/services", json=tcp_service(host))
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"].startswith("check.host: ") and "loopback" in answer.json()["detail"]
    assert rows(engine, Service) == 0
    assert (await api.post("/api/services", json=tcp_service("db.internal.invalid"))).status_code == 201  # names pass
    settings.outbound_allow_loopback = True
    assert (await api.post("/api/services", json=tcp_service("127.0.0.1", "local-db"))).status_code == 201


async def test_changing_a_tcp_check_to_a_denied_network_is_refused_and_changes_nothing(ten_denied, api):
    assert (await api.post("/api/services", json=tcp_service("192.168.1.9"))).status_code == 201
    changed = await api.put("/api/services/postgres", json={"check": {"type": "tcp", "host": "10.0.0.9", "port": 5432}})
    assert changed.status_code == 422, changed.text
    assert changed.json()["detail"] == (
        "check.host: 10.0.0.9 is in 10.0.0.0/8, a denied network: refused (OUTBOUND_DENY_NETWORKS)"
    )
    assert (await api.get("/api/services/postgres")).json()["check"]["host"] == "192.168.1.9"


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "https://[::ffff:169.254.169.254]/", "http://0xa9fea9fe/"],
)
async def test_an_incident_service_url_on_metadata_is_refused_and_nothing_is_stored(api, engine, url):
    body = {"title": "checkout down", "service": "checkout", "service_url": url}
    answer = await api.post("/api/incidents", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["errors"][0]
    assert error["field"] == "service_url" and "link-local/cloud-metadata address" in error["message"]
    assert rows(engine, Incident) == 0


async def test_an_incident_service_url_on_loopback_or_a_denied_network_is_refused(
    loopback_refused, ten_denied, api, engine
):
    for url in ("http://127.0.0.1:8080/health", "http://localhost/health", "https://10.1.2.3/health"):
        answer = await api.post("/api/incidents", json={"title": "down", "service": "checkout", "service_url": url})
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == "service_url"
    assert rows(engine, Incident) == 0


async def test_the_new_incident_form_refuses_a_metadata_service_url_beside_the_field(api, engine):
    form = {"title": "checkout down", "service": "checkout", "service_url": "http://169.254.169.254/latest/"}
    answer = await api.post("/incidents/new", data=form)
    assert answer.status_code == 422, answer.text
    assert 'id="e-service_url"' in answer.text and "link-local/cloud-metadata address" in answer.text
    assert 'value="checkout down"' in answer.text  # what was typed stays
    assert rows(engine, Incident) == 0
