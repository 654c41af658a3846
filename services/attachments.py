"""Incident attachments: type and size checks on the bytes themselves, storage under a directory we own."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import BinaryIO

import filetype
from sqlmodel import Session, col, select

from core.audit import Actor, record_audit
from core.collaboration import IncidentAttachment
from core.errors import DomainError
from core.events import incident_event
from core.tables import Incident

# Types we accept. Binary ones must be what their bytes say; text ones must be UTF-8 without NULs.
BINARY_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "application/zip", "application/gzip"}
)
TEXT_TYPES = frozenset({"text/plain", "text/csv", "text/markdown", "application/json", "application/x-ndjson"})
ALLOWED_TYPES = BINARY_TYPES | TEXT_TYPES
# Shown in the browser; everything else downloads.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "text/plain"})
UNKNOWN_TYPES = frozenset({"", "application/octet-stream"})
# Text a browser would run or style with rather than show: refused, whatever it contains.
ACTIVE_TEXT_TYPES = frozenset({"text/html", "text/xml", "text/javascript", "text/ecmascript", "text/css", "text/xsl"})
CHUNK = 64 * 1024
FILENAME_MAX = 200
# Control characters, quotes, slashes, and the invisible Unicode marks that make "report\u202egnp.exe" show
# as "reportexe.png": none of them belongs in a name shown to people or put in a header.
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\"\\/\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


class AttachmentRejected(DomainError):
    """A file we do not store: 413 (too large) or 415 (its type), with the reason."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message, status=status_code)

    @property
    def status_code(self) -> int:
        return self.status


def safe_filename(name: str | None) -> str:
    """The uploader's file name without directories, control characters or quotes (display only)."""
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = _UNSAFE_CHARS.sub("_", base).strip(" .")
    if len(cleaned) > FILENAME_MAX:  # shorten the name, keep the extension
        stem, dot, suffix = cleaned.rpartition(".")
        keep = f"{dot}{suffix}" if dot and stem and len(suffix) <= 16 else ""
        cleaned = cleaned[: FILENAME_MAX - len(keep)] + keep
    return cleaned or "attachment"


def detect_type(head: bytes, declared: str | None) -> str:
    """The content type we store, or AttachmentRejected(415) saying why the file is refused."""
    declared = (declared or "").split(";")[0].strip().lower()
    allowed = ", ".join(sorted(ALLOWED_TYPES))
    if declared.startswith("text/") and declared not in ALLOWED_TYPES and declared not in ACTIVE_TEXT_TYPES:
        declared = "text/plain"  # browsers say text/x-log, text/x-yaml …: kept (and served) as plain text
    if declared not in ALLOWED_TYPES and declared not in UNKNOWN_TYPES:
        raise AttachmentRejected(415, f"file type {declared} is not accepted; allowed: {allowed}")
    sniffed = filetype.guess_mime(head)
    if sniffed is not None:
        if sniffed not in BINARY_TYPES:
            raise AttachmentRejected(415, f"file content is {sniffed}, which is not accepted; allowed: {allowed}")
        if declared not in UNKNOWN_TYPES and declared != sniffed:
            raise AttachmentRejected(415, f"file says it is {declared} but its content is {sniffed}")
        return str(sniffed)
    if declared in BINARY_TYPES:
        raise AttachmentRejected(415, f"file says it is {declared} but its content is not")
    if b"\x00" in head:
        raise AttachmentRejected(415, f"binary content of an unknown type is not accepted; allowed: {allowed}")
    return declared if declared in TEXT_TYPES else "text/plain"


def _check_text(path: Path) -> None:
    with path.open("rb") as handle:
        data = handle.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise AttachmentRejected(415, "text attachments must be UTF-8") from None
    if b"\x00" in data:
        raise AttachmentRejected(415, "text attachments must not contain NUL bytes")


def store_attachment(
    *,
    session: Session,
    root: Path,
    incident: Incident,
    source: BinaryIO,
    filename: str | None,
    declared_type: str | None,
    max_bytes: int,
    actor: Actor,
) -> IncidentAttachment:
    """Copy the upload under `root/<incident>/<random>`, refusing it (413/415) before anything is recorded."""
    assert incident.id is not None
    directory = root / str(incident.id)
    directory.mkdir(parents=True, exist_ok=True)
    key = f"{incident.id}/{uuid.uuid4().hex}"
    final = root / key
    partial = final.with_suffix(".part")
    digest, size = hashlib.sha256(), 0
    try:
        head = source.read(CHUNK)
        content_type = detect_type(head, declared_type)
        with partial.open("wb") as out:
            chunk = head
            while chunk:
                size += len(chunk)
                if size > max_bytes:
                    raise AttachmentRejected(413, f"attachment larger than {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
                chunk = source.read(CHUNK)
        if content_type in TEXT_TYPES:
            _check_text(partial)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    attachment = IncidentAttachment(
        incident_id=incident.id,
        filename=safe_filename(filename),
        content_type=content_type,
        size_bytes=size,
        sha256=digest.hexdigest(),
        storage_key=key,
        uploaded_by_user_id=actor.user_id,
        uploaded_by=actor.name,
    )
    try:
        session.add(attachment)
        session.flush()
        incident_event(
            session,
            kind="attachment.added",
            incident_id=incident.id,
            actor=actor.name,
            attachment_id=attachment.id,
            filename=attachment.filename,
            size_bytes=size,
        )
        record_audit(
            session,
            actor=actor,
            action="incident.attach",
            target_type="incident",
            target_id=incident.id,
            after={"attachment_id": attachment.id, "filename": attachment.filename, "sha256": attachment.sha256},
        )
        session.commit()
    except BaseException:
        final.unlink(missing_ok=True)  # no row, no file
        raise
    session.refresh(attachment)
    return attachment


def list_attachments(*, session: Session, incident_id: int) -> list[IncidentAttachment]:
    query = select(IncidentAttachment).where(IncidentAttachment.incident_id == incident_id)
    return list(session.exec(query.order_by(col(IncidentAttachment.id))))


def attachment_path(root: Path, attachment: IncidentAttachment) -> Path:
    return root / attachment.storage_key
