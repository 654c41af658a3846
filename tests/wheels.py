"""Real wheels built in a test, with no build tool and no registry: `build_wheel` writes a py3-none-any wheel that
pip installs (with --require-hashes too), holding the given files, entry points and a correct RECORD.

The same inputs give the same bytes (fixed timestamps and order), so a wheel's sha256 is stable within a test."""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from packaging.version import Version

_EPOCH = (2026, 1, 1, 0, 0, 0)
_WHEEL = b"Wheel-Version: 1.0\nGenerator: tests.wheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def normalized_name(dist_name: str) -> str:
    """The distribution name as wheel file names and .dist-info directories spell it (acme-disk.x → acme_disk_x)."""
    return re.sub(r"[-_.]+", "_", dist_name).lower()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(
    dest_dir: Path,
    dist_name: str,
    version: str,
    files: Mapping[str, str | bytes],
    entry_points: Mapping[str, Mapping[str, str]] | None = None,
    *,
    requires: Sequence[str] = (),
    summary: str = "",
) -> Path:
    """Write `<name>-<version>-py3-none-any.whl` into dest_dir and return its path.

    files: path inside the wheel (e.g. "acme_agents/disk.py") → content; entry_points: group → {name: "module:attr"},
    e.g. {"agent_monitor.agents": {"disk_cleanup": "acme_agents.disk:DiskCleanupAgent"}}; requires: Requires-Dist
    lines."""
    dist = normalized_name(dist_name)
    canonical = str(Version(version)).replace("-", "_")
    info = f"{dist}-{canonical}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n"
    if summary:
        metadata += f"Summary: {summary}\n"
    metadata += "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    members: dict[str, bytes] = {
        path: content.encode() if isinstance(content, str) else content for path, content in sorted(files.items())
    }
    members[f"{info}/METADATA"] = metadata.encode()
    members[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests.wheels\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if entry_points:
        sections = [
            f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in sorted(points.items()))
            for group, points in sorted(entry_points.items())
        ]
        members[f"{info}/entry_points.txt"] = "\n".join(sections).encode()
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in members.items())
    members[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    dest_dir.mkdir(parents=True, exist_ok=True)
    wheel = dest_dir / f"{dist}-{canonical}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in members.items():
            entry = zipfile.ZipInfo(path, date_time=_EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    return wheel
