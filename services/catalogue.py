"""The agent catalogue: every configured index (AGENT_INDEXES) read, checked and merged, and the packages it lists.

`load_catalogue(settings)` reads the indexes at most once per AGENT_INDEX_TTL_SECONDS per process (per
configuration), one read at a time; an index that cannot be read or trusted is a problem of that index, never an
exception, and the others still load. When two indexes offer the same agent, the one configured first wins.
`fetch_package(listing, file, settings)` brings a package's bytes (its URL resolved against its index's location)
and refuses any whose sha256 is not the one the index gives.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import weakref
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from core.catalogue import (
    AgentVersion,
    CatalogueAgent,
    IndexProblem,
    IndexRefused,
    IndexSource,
    PackageFile,
    find_version,
    latest,
    parse_index,
    verify_index,
)
from core.errors import DomainError, NotFound
from core.outbound import GuardedAsyncClient, OutboundPolicy
from services.catalogue_fetch import (
    SIGNATURE_MAX_BYTES,
    TooLarge,
    Unreadable,
    file_url_path,
    guarded_client,
    index_document,
    is_http,
    read_bytes,
    signature_of,
)

if TYPE_CHECKING:
    from core.settings import Settings

INDEX_FETCH_SECONDS = 60.0  # one index and its signature, whole
PACKAGE_FETCH_SECONDS = 600.0  # one package, whole


class PackageRefused(DomainError):
    """A package the index lists cannot be used: its URL, size or sha256 is not acceptable."""

    status = 422


class PackageUnavailable(PackageRefused):
    """A package the index lists cannot be read now (missing, unreachable, an HTTP error)."""

    status = 502


@dataclass(frozen=True)
class Listing:
    """An agent as one index offers it."""

    index: str  # the index's name (IndexSource.label)
    # The index document's own path or URL: relative package URLs resolve against it.
    location: str
    agent: CatalogueAgent

    @property
    def name(self) -> str:
        return self.agent.name

    def latest(self, product: str | None = None) -> AgentVersion | None:
        """The version to install on this product (core.catalogue.latest)."""
        return latest(self.agent, product)

    def version(self, version: str) -> AgentVersion | None:
        return find_version(self.agent, version)


@dataclass(frozen=True)
class IndexStatus:
    """How reading one configured index went."""

    name: str
    source: str
    trusted_by: str  # "sha256", "signature", "sha256 and signature", or "" (none configured)
    location: str = ""  # the index document's path or URL ("" when not even that was found)
    title: str = ""  # the document's own name
    agents: int = 0  # agents listed from it
    error: str = ""  # why the whole index was left out, "" when it was read


@dataclass(frozen=True)
class Catalogue:
    listings: tuple[Listing, ...]
    problems: tuple[IndexProblem, ...]
    indexes: tuple[IndexStatus, ...]
    fetched_at: datetime

    def find(self, name: str) -> Listing | None:
        """The listing of the agent of this name, or None."""
        return next((listing for listing in self.listings if listing.name == name), None)

    def get(self, name: str) -> Listing:
        """The listing of the agent of this name; NotFound when no configured index offers it."""
        listing = self.find(name)
        if listing is None:
            raise NotFound(f"no configured agent index offers an agent named {name!r}")
        return listing


@dataclass(frozen=True)
class _Reading:
    status: IndexStatus
    listings: tuple[Listing, ...]
    problems: tuple[IndexProblem, ...]


_CacheKey = tuple[tuple[IndexSource, ...], int, OutboundPolicy]
_cache: dict[_CacheKey, tuple[float, Catalogue]] = {}
# asyncio locks belong to one event loop: one set per loop (a CLI may run several loops, one after the other).
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_CacheKey, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


async def load_catalogue(settings: Settings, *, refresh: bool = False) -> Catalogue:
    """The agents the configured indexes offer, read again when older than AGENT_INDEX_TTL_SECONDS or `refresh`."""
    key: _CacheKey = (
        tuple(settings.agent_indexes),
        settings.agent_index_max_bytes,
        OutboundPolicy.from_settings(settings),
    )
    ttl = settings.agent_index_ttl_seconds
    asked = time.monotonic()
    cached = _cache.get(key)
    if cached and not refresh and asked - cached[0] < ttl:
        return cached[1]
    locks = _locks.setdefault(asyncio.get_running_loop(), {})
    async with locks.setdefault(key, asyncio.Lock()):
        cached = _cache.get(key)
        # A read that started after this call asked is as fresh as a refresh: share it.
        if cached and (cached[0] >= asked or (not refresh and time.monotonic() - cached[0] < ttl)):
            return cached[1]
        started = time.monotonic()
        catalogue = await _read_all(settings)
        _cache[key] = (started, catalogue)
        return catalogue


def forget_catalogues() -> None:
    """Drop every cached catalogue of this process (the next load reads the indexes again)."""
    _cache.clear()


async def _read_all(settings: Settings) -> Catalogue:
    fetched_at = datetime.now(UTC)
    async with guarded_client(OutboundPolicy.from_settings(settings), INDEX_FETCH_SECONDS) as client:
        readings = await asyncio.gather(*(_read_index(source, settings, client) for source in settings.agent_indexes))
    listings: dict[str, Listing] = {}
    problems: list[IndexProblem] = []
    statuses: list[IndexStatus] = []
    for reading in readings:
        name = reading.status.name
        if any(status.name == name for status in statuses):
            message = "another configured index has this name: left out (give each index its own name)"
            problems.append(IndexProblem(index=name, message=message))
            statuses.append(replace(reading.status, agents=0, error=message))
            continue
        statuses.append(reading.status)
        problems.extend(reading.problems)
        for listing in reading.listings:
            first = listings.get(listing.name)
            if first is None:
                listings[listing.name] = listing
            else:
                message = f"also offered by index {first.index!r}, configured before this one: left out"
                problems.append(IndexProblem(index=name, where=f"agents ({listing.name})", message=message))
    return Catalogue(
        listings=tuple(listings.values()), problems=tuple(problems), indexes=tuple(statuses), fetched_at=fetched_at
    )


async def _read_index(source: IndexSource, settings: Settings, client: GuardedAsyncClient) -> _Reading:
    trust = [way for way, on in (("sha256", source.sha256), ("signature", source.public_key)) if on]
    status = IndexStatus(name=source.label, source=source.source, trusted_by=" and ".join(trust))
    try:
        location = await asyncio.to_thread(index_document, source.source)
        status = replace(status, location=location)
        raw = await read_bytes(
            location,
            cap=settings.agent_index_max_bytes,
            cap_name="AGENT_INDEX_MAX_BYTES",
            client=client,
            seconds=INDEX_FETCH_SECONDS,
        )
        assert raw is not None
        signature = None
        if source.public_key:
            signature = await read_bytes(
                signature_of(location),
                cap=SIGNATURE_MAX_BYTES,
                cap_name="a signature",
                client=client,
                seconds=INDEX_FETCH_SECONDS,
                missing_ok=True,
            )
        verify_index(raw, source, signature)
    except (Unreadable, IndexRefused) as err:
        return _Reading(replace(status, error=str(err)), (), (IndexProblem(index=source.label, message=str(err)),))
    parsed = parse_index(raw, index_name=source.label)
    whole = next((problem.message for problem in parsed.problems if not problem.where), "")
    listings = tuple(Listing(index=source.label, location=location, agent=agent) for agent in parsed.agents)
    status = replace(status, title=parsed.title, agents=len(listings), error=whole)
    return _Reading(status, listings, parsed.problems)


def package_location(listing: Listing, file: PackageFile) -> str:
    """Where a package of this listing is: its URL resolved against the index's location. An HTTP index's packages
    must be http(s) (never a file of this machine); a local index's may be paths, file:// or http(s) URLs."""
    if is_http(listing.location):
        resolved = urljoin(listing.location, file.url)
        if not is_http(resolved):
            raise PackageRefused(
                f"{file.url}: a package of an index read over HTTP must be at an http(s) URL (or a relative one)"
            )
        return resolved
    scheme = urlsplit(file.url).scheme.lower()
    if scheme in ("http", "https"):
        return file.url
    if scheme == "file":
        return str(file_url_path(file.url))
    if len(scheme) > 1:  # one letter is a Windows drive
        raise PackageRefused(f"{file.url}: a package must be at a path or an http(s) URL")
    return str(Path(listing.location).parent / file.url)


async def fetch_package(listing: Listing, file: PackageFile, settings: Settings) -> bytes:
    """The package's bytes, checked against the sha256 its index gives. Raises PackageRefused (the URL, size or
    sha256 is not acceptable) or PackageUnavailable (it cannot be read now)."""
    location = package_location(listing, file)
    try:
        async with guarded_client(OutboundPolicy.from_settings(settings), PACKAGE_FETCH_SECONDS) as client:
            data = await read_bytes(
                location,
                cap=settings.agent_package_max_bytes,
                cap_name="AGENT_PACKAGE_MAX_BYTES",
                client=client,
                seconds=PACKAGE_FETCH_SECONDS,
            )
    except TooLarge as err:
        raise PackageRefused(str(err)) from None
    except Unreadable as err:
        raise PackageUnavailable(str(err)) from None
    assert data is not None
    actual = hashlib.sha256(data).hexdigest()
    if actual != file.sha256:
        raise PackageRefused(
            f"{location}: its sha256 is {actual}, but index {listing.index!r} says {file.sha256}: refused"
        )
    return data
