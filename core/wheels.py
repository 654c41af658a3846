"""What a wheel says about itself, read from its bytes without installing it: the distribution's name and version
(its .dist-info/METADATA) and its entry points (entry_points.txt), e.g. the agents it declares."""

from __future__ import annotations

import configparser
import io
import zipfile
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser

from core.agents import ENTRY_POINT_GROUP

_MAX_METADATA_BYTES = 1024 * 1024


class NotAWheel(ValueError):
    """The bytes are not a wheel we can read; str() says why in one line."""


@dataclass(frozen=True)
class WheelInfo:
    name: str  # the distribution's name as its METADATA spells it
    version: str
    entry_points: dict[str, dict[str, str]] = field(default_factory=dict)  # group → {name: "module:attr"}

    @property
    def agents(self) -> dict[str, str]:
        """The agents the wheel declares (the agent_monitor.agents entry points): name → "module:Class"."""
        return self.entry_points.get(ENTRY_POINT_GROUP, {})


def wheel_info(data: bytes) -> WheelInfo:
    """Read a wheel's name, version and entry points; NotAWheel when it has no readable .dist-info."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise NotAWheel("not a wheel: not a zip archive") from None
    with archive:
        infos = {name.split("/")[0] for name in archive.namelist() if name.count("/") == 1}
        infos = {name for name in infos if name.endswith(".dist-info")}
        if len(infos) != 1:
            raise NotAWheel(f"not a wheel: {len(infos)} top-level .dist-info directories, expected one")
        info = infos.pop()
        metadata = _member(archive, f"{info}/METADATA")
        if metadata is None:
            raise NotAWheel(f"not a wheel: no {info}/METADATA")
        headers = BytesHeaderParser().parsebytes(metadata)
        name, version = headers.get("Name", "").strip(), headers.get("Version", "").strip()
        if not name or not version:
            raise NotAWheel(f"not a wheel: {info}/METADATA has no Name or no Version")
        points = _member(archive, f"{info}/entry_points.txt")
    return WheelInfo(name=name, version=version, entry_points=_entry_points(points) if points else {})


def _member(archive: zipfile.ZipFile, name: str) -> bytes | None:
    try:
        member = archive.getinfo(name)
    except KeyError:
        return None
    if member.file_size > _MAX_METADATA_BYTES:
        raise NotAWheel(f"not a wheel we read: {name} is larger than {_MAX_METADATA_BYTES} bytes")
    try:
        return archive.read(member)
    except (zipfile.BadZipFile, OSError, ValueError) as err:  # a damaged archive (a CRC error is a BadZipFile)
        raise NotAWheel(f"not a readable wheel: {name}: {err}") from None


def _entry_points(text: bytes) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # entry point names keep their case
    try:
        parser.read_string(text.decode())
    except (configparser.Error, UnicodeDecodeError) as err:
        raise NotAWheel(f"not a wheel we read: its entry_points.txt is not readable ({err})") from None
    return {group: {name: value.strip() for name, value in parser[group].items()} for group in parser.sections()}
