"""Comments, attachments, links, templates and the timeline of an incident, on the real app and Postgres."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from app.main import create_app
from core.collaboration import IncidentAttachment
from tests.api.incident_rows import insert_incident
from tests.conftest import app_client
from tests.factories import create_incident, make_user, wait_for_workflow

SMALL_LIMIT = 4096


def png_bytes(width: int = 2, height: int = 2) -> bytes:
    """A real, decodable PNG (grey pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def multipart(filename: bytes, content: bytes, content_type: bytes = b"text/plain") -> tuple[bytes, dict[str, str]]:
    """A multipart body built by hand, so the filename reaches the server byte for byte."""
    boundary = b"am-test-boundary"
    body = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: " + content_type + b"\r\n\r\n" + content + b"\r\n--" + boundary + b"--\r\n"
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}


def stored_files(settings) -> list[Path]:
    root = settings.effective_attachments_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def attachment_rows(engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(IncidentAttachment)).one()


async def upload(client: httpx.AsyncClient, incident_id: int, name: str, content: bytes, content_type: str):
    return await client.post(f"/api/incidents/{incident_id}/attachments", files={"file": (name, content, content_type)})


# ---- comments ---------------------------------------------------------------------------------------


async def test_comment_markdown_is_rendered_and_sanitised(api, engine):
    incident_id = insert_incident(engine)
    body = (
        "**bold** <script>alert(1)</script> <img src=x onerror=alert(1)>\n\n"
        "[bad](javascript:alert(1)) [bad2](JaVaScRiPt:alert(2)) [data](data:text/html;base64,PHNjcmlwdD4=)\n\n"
        "[site](https://example.com/a?b=1) ![pixel](https://tracker.example/p.png)\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |"
    )
    response = await api.post(f"/api/incidents/{incident_id}/comments", json={"body": body})
    assert response.status_code == 201, response.text
    comment = response.json()
    assert comment["body"] == body and comment["author"] == "root" and comment["incident_id"] == incident_id
    html = comment["body_html"]
    assert "<strong>bold</strong>" in html
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html and "onerror=alert(1)&gt;" in html
    # Links to other schemes stay visible as text, never as links.
    assert 'href="javascript' not in html.lower() and 'href="data:' not in html
    assert "[bad](javascript:alert(1))" in html
    assert '<a href="https://example.com/a?b=1" rel="nofollow noopener noreferrer">site</a>' in html
    assert "<table>" in html and "<td>1</td>" in html
    listed = (await api.get(f"/api/incidents/{incident_id}/comments")).json()
    assert [c["body_html"] for c in listed] == [html]


async def test_bad_comments_are_refused(api, engine, client_as):
    incident_id = insert_incident(engine)
    path = f"/api/incidents/{incident_id}/comments"
    blank = await api.post(path, json={"body": "  \n\t "})
    assert blank.status_code == 422 and "body must not be blank" in blank.json()["detail"]
    assert (await api.post(path, json={"body": ""})).status_code == 422
    assert (await api.post(path, json={})).status_code == 422
    assert (await api.post(path, json={"body": "x" * 20_001})).status_code == 422
    nul = await api.post(path, json={"body": "a\x00b"})
    assert nul.status_code == 422
    unknown = await api.post("/api/incidents/987654321/comments", json={"body": "hi"})
    assert unknown.status_code == 404 and unknown.json()["detail"] == "incident 987654321 does not exist"
    assert (await api.get("/api/incidents/987654321/comments")).status_code == 404
    viewer = await client_as("viewer")
    refused = await viewer.post(path, json={"body": "hi"})
    assert refused.status_code == 403
    assert (await viewer.get(path)).json() == []  # viewers read


async def test_comments_list_oldest_first_with_after_id_paging(api, engine, client_as):
    incident_id = insert_incident(engine)
    other = insert_incident(engine)
    responder = await client_as("responder", "bob")
    path = f"/api/incidents/{incident_id}/comments"
    made = []
    for n in range(5):
        client = responder if n % 2 else api
        made.append((await client.post(path, json={"body": f"note {n}"})).json())
    await api.post(f"/api/incidents/{other}/comments", json={"body": "elsewhere"})
    assert [c["author"] for c in made] == ["root", "bob", "root", "bob", "root"]

    first = (await api.get(path, params={"limit": 2})).json()
    assert [c["body"] for c in first] == ["note 0", "note 1"]
    second = (await api.get(path, params={"limit": 2, "after_id": first[-1]["id"]})).json()
    assert [c["body"] for c in second] == ["note 2", "note 3"]
    last = (await api.get(path, params={"limit": 2, "after_id": second[-1]["id"]})).json()
    assert [c["body"] for c in last] == ["note 4"]
    assert (await api.get(path, params={"after_id": last[-1]["id"]})).json() == []
    assert (await api.get(path, params={"limit": 0})).status_code == 422


async def test_a_hundred_concurrent_comments_are_all_kept(api, engine):
    incident_id = insert_incident(engine)
    path = f"/api/incidents/{incident_id}/comments"
    responses = await asyncio.gather(*(api.post(path, json={"body": f"comment {n}"}) for n in range(100)))
    assert [r.status_code for r in responses] == [201] * 100, {r.status_code for r in responses}

    listed = (await api.get(path, params={"limit": 500})).json()
    assert len({c["id"] for c in listed}) == 100
    assert sorted(c["body"] for c in listed) == sorted(f"comment {n}" for n in range(100))
    assert [c["id"] for c in listed] == sorted(c["id"] for c in listed)
    timeline = (await api.get(f"/api/incidents/{incident_id}/timeline", params={"limit": 500})).json()["items"]
    added = [e for e in timeline if e["kind"] == "comment.added"]
    assert len(added) == 100
    assert {e["data"]["comment_id"] for e in added} == {c["id"] for c in listed}


# ---- attachments ------------------------------------------------------------------------------------


async def test_text_and_png_attachments_are_stored_and_downloaded_exactly(api, engine, settings, client_as):
    incident_id = insert_incident(engine)
    viewer = await client_as("viewer")
    text = "line one\nline two — ünïcode\n".encode()
    image = png_bytes()
    for name, content, declared, stored_type, disposition in (
        ("notes.txt", text, "text/plain", "text/plain", "inline"),
        ("graph.png", image, "image/png", "image/png", "inline"),
        ("graph2.png", image, "application/octet-stream", "image/png", "inline"),  # the bytes decide
        ("data.json", b'{"a": 1}', "application/json", "application/json", "attachment"),
    ):
        response = await upload(api, incident_id, name, content, declared)
        assert response.status_code == 201, (name, response.text)
        attachment = response.json()
        assert attachment["filename"] == name and attachment["content_type"] == stored_type
        assert attachment["size_bytes"] == len(content)
        assert attachment["sha256"] == hashlib.sha256(content).hexdigest()
        assert attachment["uploaded_by"] == "root"

        download = await viewer.get(attachment["download_url"])
        assert download.status_code == 200
        assert download.content == content
        assert download.headers["content-type"].startswith(stored_type)
        assert download.headers["content-disposition"] == f'{disposition}; filename="{name}"'
        assert "sandbox" in download.headers["content-security-policy"]
        assert download.headers["x-content-type-options"] == "nosniff"
    listed = (await api.get(f"/api/incidents/{incident_id}/attachments")).json()
    assert [a["filename"] for a in listed] == ["notes.txt", "graph.png", "graph2.png", "data.json"]
    assert len(stored_files(settings)) == 4


FILENAMES = [
    (b"../../etc/passwd", "passwd", 'inline; filename="passwd"'),
    (b"..\\\\..\\\\boot.ini", "boot.ini", 'inline; filename="boot.ini"'),
    (
        b'evil\\"; filename=x.html',
        "evil_; filename=x.html",
        "inline; filename*=utf-8''evil_%3B%20filename%3Dx.html",
    ),
    (b"tab\there\x01.txt", "tab_here_.txt", 'inline; filename="tab_here_.txt"'),
    (
        "r\u00e9sum\u00e9 \u2713.txt".encode(),
        "r\u00e9sum\u00e9 \u2713.txt",
        "inline; filename*=utf-8''r%C3%A9sum%C3%A9%20%E2%9C%93.txt",
    ),
    ("report\u202egnp.exe".encode(), "report_gnp.exe", 'inline; filename="report_gnp.exe"'),
    (b"..", "attachment", 'inline; filename="attachment"'),
    (b"x" * 300 + b".log", "x" * 196 + ".log", f'inline; filename="{"x" * 196}.log"'),  # shortened, extension kept
]


async def test_uploaded_filenames_are_sanitised(api, engine, settings):
    incident_id = insert_incident(engine)
    root = settings.effective_attachments_dir.resolve()
    for sent, shown, disposition in FILENAMES:
        body, headers = multipart(sent, b"hello", b"application/octet-stream")
        response = await api.post(f"/api/incidents/{incident_id}/attachments", content=body, headers=headers)
        assert response.status_code == 201, (sent, response.text)
        assert response.json()["filename"] == shown, sent
        download = await api.get(response.json()["download_url"])
        assert download.content == b"hello"
        assert download.headers["content-disposition"] == disposition, sent
    # Stored under names of ours, in the incident's directory, whatever the uploader called them.
    stored = stored_files(settings)
    assert len(stored) == len(FILENAMES)
    assert {p.resolve().parent for p in stored} == {root / str(incident_id)}
    assert not any(p.name in {"passwd", "boot.ini"} for p in root.parent.rglob("*"))


@pytest.fixture
async def small_upload_api(settings, engine, temporal_client) -> AsyncIterator[httpx.AsyncClient]:
    """A second app on the same database whose attachment limit is SMALL_LIMIT bytes."""
    small = settings.model_copy(update={"attachment_max_bytes": SMALL_LIMIT})
    app = create_app(small, engine=engine, temporal=temporal_client)
    _, token = make_user(engine, "responder")
    async with app_client(app, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


async def test_too_large_attachments_are_413_and_leave_nothing(small_upload_api, engine, settings):
    incident_id = insert_incident(engine)
    path = f"/api/incidents/{incident_id}/attachments"
    exact = await upload(small_upload_api, incident_id, "ok.txt", b"a" * SMALL_LIMIT, "text/plain")
    assert exact.status_code == 201  # the limit itself is allowed
    before = stored_files(settings)

    # Content-Length far above the limit: refused before the body is read.
    fast = await upload(small_upload_api, incident_id, "big.txt", b"a" * (SMALL_LIMIT + 200_000), "text/plain")
    assert fast.status_code == 413 and fast.json()["detail"] == f"request body larger than {SMALL_LIMIT} bytes"

    # Within the multipart allowance, so the file itself is counted.
    counted = await upload(small_upload_api, incident_id, "big.txt", b"a" * (SMALL_LIMIT + 1), "text/plain")
    assert counted.status_code == 413 and counted.json()["detail"] == f"attachment larger than {SMALL_LIMIT} bytes"

    # No Content-Length at all (chunked): counted while it streams, and not read past the limit.
    huge = Chunked(*multipart(b"big.bin", png_bytes() + b"\x00" * 5_000_000, b"image/png"))
    streamed = await small_upload_api.post(path, content=huge.stream(), headers=huge.headers)
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["detail"] == f"attachment larger than {SMALL_LIMIT} bytes"
    assert huge.sent < 200_000
    just_over = Chunked(*multipart(b"big.txt", b"a" * (SMALL_LIMIT + 1)))
    streamed = await small_upload_api.post(path, content=just_over.stream(), headers=just_over.headers)
    assert streamed.status_code == 413 and streamed.json()["detail"] == f"attachment larger than {SMALL_LIMIT} bytes"

    assert attachment_rows(engine) == 1 and stored_files(settings) == before


class Chunked:
    """A request body sent without Content-Length, counting how much of it the server pulled."""

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.body, self.headers, self.sent = body, headers, 0

    async def stream(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.body), 8192):
            self.sent += len(self.body[start : start + 8192])
            yield self.body[start : start + 8192]


async def test_uploads_nobody_may_make_are_refused_before_the_body_is_read(api, anonymous, client_as, engine):
    incident_id = insert_incident(engine)
    viewer = await client_as("viewer")
    for client, path, status in (
        (anonymous, f"/api/incidents/{incident_id}/attachments", 401),
        (viewer, f"/api/incidents/{incident_id}/attachments", 403),
        (api, "/api/incidents/987654321/attachments", 404),
    ):
        body = Chunked(*multipart(b"big.txt", b"a" * 20_000_000))
        response = await client.post(path, content=body.stream(), headers=body.headers)
        assert response.status_code == status, response.text
        assert body.sent <= 8192, (status, body.sent)
    assert (await api.get(f"/api/incidents/{incident_id}/attachments")).json() == []


ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 100
WINDOWS_EXE = (
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + b"PE\x00\x00" + b"\x00" * 64
)


REFUSED = [
    (b"<html><script>alert(1)</script></html>", "text/html", "file type text/html is not accepted"),
    (b"<svg onload=alert(1)>", "image/svg+xml", "file type image/svg+xml is not accepted"),
    (WINDOWS_EXE, "application/x-msdownload", "file type application/x-msdownload is not accepted"),
    (WINDOWS_EXE, "application/octet-stream", "file content is application/x-msdownload"),
    (ELF, "application/octet-stream", "file content is application/x-executable"),
    (ELF, "text/plain", "file content is application/x-executable"),
    (png_bytes(), "image/jpeg", "file says it is image/jpeg but its content is image/png"),
    (b"just text", "image/png", "file says it is image/png but its content is not"),
    (b"\xff\xfe\xfd not utf-8", "text/plain", "text attachments must be UTF-8"),
    (b"nul\x00inside", "application/octet-stream", "binary content of an unknown type is not accepted"),
]


async def test_disallowed_types_are_415_and_leave_nothing(api, engine, settings):
    incident_id = insert_incident(engine)
    for content, declared, reason in REFUSED:
        response = await upload(api, incident_id, "file.bin", content, declared)
        assert response.status_code == 415, (declared, reason, response.text)
        assert reason in response.json()["detail"], response.json()
    assert attachment_rows(engine) == 0
    assert stored_files(settings) == []
    assert (await api.get(f"/api/incidents/{incident_id}/timeline")).json()["items"] == []
    assert (await api.get(f"/api/incidents/{incident_id}/attachments")).json() == []


async def test_attachments_belong_to_their_incident(api, engine, client_as):
    one, two = insert_incident(engine), insert_incident(engine)
    made = (await upload(api, one, "a.txt", b"a", "text/plain")).json()
    other = await api.get(f"/api/incidents/{two}/attachments/{made['id']}")
    assert other.status_code == 404 and other.json()["detail"] == f"incident {two} has no attachment {made['id']}"
    assert (await api.get(f"/api/incidents/{one}/attachments/987654321")).status_code == 404
    assert (await api.get(f"/api/incidents/{two}/attachments")).json() == []
    unknown = await upload(api, 987654321, "a.txt", b"a", "text/plain")
    assert unknown.status_code == 404
    viewer = await client_as("viewer")
    assert (await upload(viewer, one, "a.txt", b"a", "text/plain")).status_code == 403
    assert (await viewer.get(made["download_url"])).status_code == 200
    missing_field = await api.post(f"/api/incidents/{one}/attachments", data={"other": "x"})
    assert missing_field.status_code == 422


# ---- links ------------------------------------------------------------------------------------------


async def links_of(api: httpx.AsyncClient, incident_id: int) -> list[tuple[str, int]]:
    detail = (await api.get(f"/api/incidents/{incident_id}")).json()
    return [(link["kind"], link["incident_id"]) for link in detail["links"]]


async def test_a_link_shows_on_both_incidents_and_goes_from_both(api, engine):
    for kind, inverse in (("duplicate_of", "duplicated_by"), ("caused_by", "causes"), ("related", "related")):
        await check_link(api, engine, kind, inverse)


async def check_link(api: httpx.AsyncClient, engine, kind: str, inverse: str) -> None:
    a = insert_incident(engine, title="checkout 500s")
    b = insert_incident(engine, title="payments down", severity="P1")
    response = await api.post(f"/api/incidents/{a}/links", json={"kind": kind, "related_incident_id": b})
    assert response.status_code == 201, response.text
    (link,) = response.json()["links"]
    assert link == {"id": link["id"], "kind": kind, "incident_id": b, "title": "payments down", "status": "open",
                    "severity": "P1"}  # fmt: skip
    assert await links_of(api, a) == [(kind, b)]
    assert await links_of(api, b) == [(inverse, a)]

    timeline_b = (await api.get(f"/api/incidents/{b}/timeline")).json()["items"]
    assert [(e["kind"], e["data"]["link"], e["data"]["other_incident_id"]) for e in timeline_b] == [
        ("link.added", inverse, a)
    ]

    deleted = await api.delete(f"/api/incidents/{a}/links/{link['id']}")
    assert deleted.status_code == 204
    assert await links_of(api, a) == [] and await links_of(api, b) == []
    assert (await api.delete(f"/api/incidents/{a}/links/{link['id']}")).status_code == 404
    assert [e["kind"] for e in (await api.get(f"/api/incidents/{a}/timeline")).json()["items"]] == [
        "link.added",
        "link.removed",
    ]


async def test_bad_links_are_refused(api, engine, client_as):
    a, b, c = insert_incident(engine), insert_incident(engine), insert_incident(engine)
    path = f"/api/incidents/{a}/links"
    made = await api.post(path, json={"kind": "duplicate_of", "related_incident_id": b})
    assert made.status_code == 201
    again = await api.post(path, json={"kind": "duplicate_of", "related_incident_id": b})
    assert again.status_code == 409 and again.json()["detail"] == f"incident {a} is already duplicate_of incident {b}"
    # The same fact said from the other side is also a repeat (or a contradiction).
    reverse = await api.post(f"/api/incidents/{b}/links", json={"kind": "duplicate_of", "related_incident_id": a})
    assert reverse.status_code == 409
    await api.post(path, json={"kind": "related", "related_incident_id": c})
    related_back = await api.post(f"/api/incidents/{c}/links", json={"kind": "related", "related_incident_id": a})
    assert related_back.status_code == 409
    # A different kind between the same pair is a different fact.
    assert (await api.post(path, json={"kind": "caused_by", "related_incident_id": b})).status_code == 201

    own = await api.post(path, json={"kind": "related", "related_incident_id": a})
    assert own.status_code == 422 and own.json()["errors"][0]["field"] == "related_incident_id"
    unknown = await api.post(path, json={"kind": "related", "related_incident_id": 987654321})
    assert unknown.status_code == 422
    assert unknown.json()["detail"] == "related_incident_id: incident 987654321 does not exist"
    assert (await api.post(path, json={"kind": "blocks", "related_incident_id": b})).status_code == 422
    missing = await api.post("/api/incidents/987654321/links", json={"kind": "related", "related_incident_id": a})
    assert missing.status_code == 404
    viewer = await client_as("viewer")
    assert (await viewer.post(path, json={"kind": "related", "related_incident_id": c})).status_code == 403

    link_id = made.json()["links"][0]["id"]
    assert (await viewer.delete(f"/api/incidents/{a}/links/{link_id}")).status_code == 403
    assert (await api.delete(f"/api/incidents/{c}/links/{link_id}")).status_code == 404  # not c's link
    assert (await api.delete(f"/api/incidents/{b}/links/{link_id}")).status_code == 204  # from the other side
    assert await links_of(api, a) == [("related", c), ("caused_by", b)]


async def test_concurrent_identical_links_make_one(api, engine):
    a, b = insert_incident(engine), insert_incident(engine)
    responses = await asyncio.gather(
        *(api.post(f"/api/incidents/{a}/links", json={"kind": "related", "related_incident_id": b}) for _ in range(4)),
        *(api.post(f"/api/incidents/{b}/links", json={"kind": "related", "related_incident_id": a}) for _ in range(4)),
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 7
    assert len(await links_of(api, a)) == 1 and len(await links_of(api, b)) == 1


# ---- templates --------------------------------------------------------------------------------------


async def test_templates_are_admin_managed_and_readable_by_all(api, client_as):
    path = "/api/incident-templates/database"
    missing = await api.get(path)
    assert missing.status_code == 404 and missing.json()["detail"] == "incident type database has no template"
    body = {"default_severity": "P1", "description": "Check replication lag first.", "on_reopen": "none"}
    responder = await client_as("responder")
    assert (await responder.put(path, json=body)).status_code == 403
    saved = await api.put(path, json=body)
    assert saved.status_code == 200, saved.text
    assert saved.json() == {**body, "playbook_id": None, "incident_type": "database", "updated_by": "root",
                            "escalation": []}  # fmt: skip
    assert (await responder.get(path)).json() == saved.json()
    assert [t["incident_type"] for t in (await responder.get("/api/incident-templates")).json()] == ["database"]

    replaced = await api.put(path, json={"default_severity": "P2", "playbook_id": "default"})
    assert replaced.json()["default_severity"] == "P2" and replaced.json()["on_reopen"] == "restart"
    assert replaced.json()["description"] == "" and replaced.json()["playbook_id"] == "default"

    for bad in ({"default_severity": "P0"}, {"on_reopen": "sometimes"}, {"playbook_id": "Not Valid"}):
        assert (await api.put(path, json=bad)).status_code == 422, bad
    no_playbook = await api.put(path, json={"playbook_id": "nope"})
    assert no_playbook.status_code == 422
    assert no_playbook.json()["detail"] == "playbook_id: playbook nope does not exist"
    assert (await api.put("/api/incident-templates/Bad Type", json={})).status_code == 422

    assert (await responder.delete(path)).status_code == 403
    assert (await api.delete(path)).status_code == 204
    assert (await api.get(path)).status_code == 404
    assert (await api.delete(path)).status_code == 404
    audit = (await api.get("/api/audit", params={"target_type": "incident_template"})).json()["items"]
    assert [e["action"] for e in reversed(audit)] == [
        "incident_template.save",
        "incident_template.save",
        "incident_template.delete",
    ]


async def test_concurrent_first_saves_of_a_template_all_succeed(api):
    bodies = [{"default_severity": severity} for severity in ("P1", "P2", "P3", "P4") * 3]
    responses = await asyncio.gather(*(api.put("/api/incident-templates/race", json=b) for b in bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    saved = (await api.get("/api/incident-templates/race")).json()
    assert saved["default_severity"] in ("P1", "P2", "P3", "P4")
    audit = (await api.get("/api/audit", params={"action": "incident_template.save"})).json()["items"]
    assert len(audit) == len(bodies) and sum(e["before"] is None for e in audit) == 1


async def test_new_incidents_take_their_types_template_defaults(api):
    template = {"default_severity": "P1", "description": "Runbook: check replication lag."}
    assert (await api.put("/api/incident-templates/database", json=template)).status_code == 200
    from_template = await create_incident(api, incident_type="database", severity=None)
    assert from_template["severity"] == "P1" and from_template["description"] == template["description"]
    explicit = await create_incident(api, incident_type="database", severity="P4", description="Known: disk.")
    assert explicit["severity"] == "P4" and explicit["description"] == "Known: disk."
    untyped = await create_incident(api, severity=None)
    assert untyped["severity"] == "P3" and untyped["description"] == ""
    bad = await api.post("/api/incidents", json={"title": "x", "service": "db", "playbook_id": "nope"})
    assert bad.status_code == 422 and bad.json()["detail"] == "playbook_id: playbook nope does not exist"


# ---- timeline ---------------------------------------------------------------------------------------


async def test_timeline_lists_everything_in_order_with_its_actor(
    api, engine, client_as, temporal_client, worker, service
):
    url, _ = service
    oncall, _ = make_user(engine, "responder", username="oncall")
    team = (await api.post("/api/teams", json={"name": "sre"})).json()
    responder = await client_as("responder", "carol")
    other = insert_incident(engine)
    incident = await create_incident(api, service_url=url)
    incident_id = incident["id"]

    assigned = await api.put(
        f"/api/incidents/{incident_id}/assignee", json={"user_id": oncall.id, "team_id": team["id"]}
    )
    assert assigned.status_code == 200
    assert (await responder.post(f"/api/incidents/{incident_id}/comments", json={"body": "on it"})).status_code == 201
    assert (await upload(responder, incident_id, "log.txt", b"boom", "text/plain")).status_code == 201
    linked = await api.post(
        f"/api/incidents/{incident_id}/links", json={"kind": "related", "related_incident_id": other}
    )
    assert linked.status_code == 201
    await wait_for_workflow(temporal_client, incident["workflow_id"])

    deadline = asyncio.get_running_loop().time() + 20
    while True:
        page = (await api.get(f"/api/incidents/{incident_id}/timeline")).json()
        kinds = [e["kind"] for e in page["items"]]
        if ("workflow.status", "completed") in [(e["kind"], e["data"].get("status")) for e in page["items"]]:
            break
        assert asyncio.get_running_loop().time() < deadline, kinds
        await asyncio.sleep(0.05)
    items = page["items"]
    assert [e["id"] for e in items] == sorted({e["id"] for e in items})
    assert kinds[0] == "incident.created"
    for kind in ("incident.status", "incident.assigned", "workflow.status", "step.status", "comment.added",
                 "attachment.added", "link.added"):  # fmt: skip
        assert kind in kinds, kind

    def first(kind: str) -> dict:
        return next(e for e in items if e["kind"] == kind)

    assert first("incident.created")["data"]["actor"] == "root"
    assert first("incident.assigned")["data"] == {"actor": "root", "user": "oncall", "team": "sre"}
    assert first("comment.added")["data"]["actor"] == "carol" and first("comment.added")["data"]["excerpt"] == "on it"
    assert first("attachment.added")["data"]["actor"] == "carol"
    assert first("attachment.added")["data"]["filename"] == "log.txt"
    assert first("link.added")["data"] == {"actor": "root", "link": "related", "other_incident_id": other}
    statuses = [(e["data"]["actor"], e["data"]["status"]) for e in items if e["kind"] == "incident.status"]
    assert statuses == [("workflow", "in_progress"), ("workflow", "resolved")]
    # Human actions are in the order they were made.
    human = [k for k in kinds if k in ("incident.assigned", "comment.added", "attachment.added", "link.added")]
    assert human == ["incident.assigned", "comment.added", "attachment.added", "link.added"]

    # Paging with after_id gives the same entries.
    paged: list[int] = []
    after = 0
    while True:
        chunk = (await api.get(f"/api/incidents/{incident_id}/timeline", params={"after_id": after, "limit": 7})).json()
        paged += [e["id"] for e in chunk["items"]]
        if chunk["next_after_id"] is None:
            break
        after = chunk["next_after_id"]
    assert paged == [e["id"] for e in items]
    assert (await api.get("/api/incidents/987654321/timeline")).status_code == 404
