"""Reading the bytes of an index, its signature or a package: from a file, or over http(s) through the outbound guard,
never more than a cap, within a time limit. services/catalogue.py decides what to read and what the bytes mean."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpx

from core.outbound import BlockedTarget, GuardedAsyncClient, OutboundPolicy, check_url

INDEX_FILE = "index.json"
SIGNATURE_SUFFIX = ".sig"
SIGNATURE_MAX_BYTES = 4096


class Unreadable(Exception):
    """The bytes could not be read (missing, refused, too large, too slow); str() is one line saying why."""


class TooLarge(Unreadable):
    pass


def is_http(location: str) -> bool:
    return urlsplit(location).scheme.lower() in ("http", "https")


def file_url_path(url: str) -> Path:
    """The path a file:// URL names."""
    return Path(url2pathname(urlsplit(url).path))


def index_document(source: str) -> str:
    """Where a configured source's index document is: a URL (one ending in / is a directory: its index.json), or
    a path (a directory: its index.json). Looks at the file system: call it in a thread."""
    if is_http(source):
        return source + INDEX_FILE if source.endswith("/") else source
    path = file_url_path(source) if source.lower().startswith("file:") else Path(source).expanduser()
    return str(path / INDEX_FILE if path.is_dir() else path)


def signature_of(location: str) -> str:
    """Where the detached signature of the index at `location` is."""
    return location + SIGNATURE_SUFFIX


def guarded_client(policy: OutboundPolicy, seconds: float) -> GuardedAsyncClient:
    # Redirects are followed: each hop is a new connection the guard checks.
    return GuardedAsyncClient(
        policy,
        timeout=httpx.Timeout(min(seconds, 30.0)),
        follow_redirects=True,
        headers={"user-agent": "agent-monitor"},
    )


async def read_bytes(
    location: str, *, cap: int, cap_name: str, client: GuardedAsyncClient, seconds: float, missing_ok: bool = False
) -> bytes | None:
    """The bytes at a path or http(s) URL, at most `cap` (named `cap_name` in the refusal); None when missing and
    `missing_ok`. Raises Unreadable."""
    try:
        async with asyncio.timeout(seconds):
            if is_http(location):
                return await _get(client, location, cap=cap, cap_name=cap_name, missing_ok=missing_ok)
            return await asyncio.to_thread(_read_file, Path(location), cap, cap_name, missing_ok)
    except TimeoutError:
        raise Unreadable(f"reading {location} took longer than {seconds:g} s") from None


def _read_file(path: Path, cap: int, cap_name: str, missing_ok: bool) -> bytes | None:
    try:
        with path.open("rb") as file:
            data = file.read(cap + 1)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise Unreadable(f"{path} does not exist") from None
    except OSError as err:
        raise Unreadable(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) > cap:
        raise TooLarge(f"{path} is larger than {cap} bytes ({cap_name})")
    return data


async def _get(client: GuardedAsyncClient, url: str, *, cap: int, cap_name: str, missing_ok: bool) -> bytes | None:
    too_large = f"{url} is larger than {cap} bytes ({cap_name})"
    try:
        check_url(url, client.outbound_policy)  # early and plain: not http(s), or a refused literal address
        async with client.stream("GET", url) as response:
            if response.status_code == 404 and missing_ok:
                return None
            if response.status_code != 200:
                raise Unreadable(f"{url} answered HTTP {response.status_code}")
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > cap:
                raise TooLarge(too_large)
            body = bytearray()
            async for chunk in response.aiter_bytes():  # decoded: a compressed body is capped as it unpacks
                body += chunk
                if len(body) > cap:
                    raise TooLarge(too_large)
            return bytes(body)
    except BlockedTarget as err:
        raise Unreadable(f"{url}: {err}") from None
    except httpx.HTTPError as err:
        raise Unreadable(f"cannot fetch {url}: {err or type(err).__name__}") from None
