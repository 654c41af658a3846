"""Reading the configured agent indexes (services/catalogue.py): from a directory, a file and HTTP on 127.0.0.1,
trusted by signature, capped, cached; and fetching the packages they list with their sha256 checked."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from core.catalogue import IndexSource, PackageFile
from core.settings import Settings
from services.catalogue import (
    Listing,
    PackageRefused,
    PackageUnavailable,
    fetch_package,
    load_catalogue,
)
from tests.agent_indexes import Signer, agent_wheel, python_entry, serve_directory, write_index
from tests.peers import closed_port_url


def settings_for(tmp_path: Path, *sources: str | IndexSource | dict[str, Any], **extra: Any) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        agent_indexes=[{"source": s} if isinstance(s, str) else s for s in sources],
        **{"outbound_allow_loopback": True, **extra},  # the indexes these tests serve are on 127.0.0.1
    )


@pytest.fixture
def acme(tmp_path: Path) -> Path:
    """An index directory: restart_pod 1.0.0 and 1.1.0, log_search 0.2.0, and one bad entry; wheels under wheels/."""
    root = tmp_path / "acme"
    wheels = root / "wheels"
    restart = {v: agent_wheel(wheels, "restart_pod", v) for v in ("1.0.0", "1.1.0")}
    logs = {"0.2.0": agent_wheel(wheels, "log_search", "0.2.0")}
    broken = {"name": "broken", "capabilities": ["remediation"], "kind": "python", "versions": [{"version": "1"}]}
    write_index(root, [python_entry("restart_pod", restart, root), python_entry("log_search", logs, root), broken])
    return root


def names(catalogue: Any) -> list[str]:
    return [listing.name for listing in catalogue.listings]


async def test_a_directory_a_file_and_an_http_index_all_list_their_agents_and_their_bad_entries(acme, tmp_path):
    with serve_directory(acme) as served:
        for source, location in (
            (str(acme), str(acme / "index.json")),
            (str(acme / "index.json"), str(acme / "index.json")),
            (acme.as_uri(), str(acme / "index.json")),
            (f"{served.base}/index.json", f"{served.base}/index.json"),
            (f"{served.base}/", f"{served.base}/index.json"),  # a URL ending in / is a directory
        ):
            catalogue = await load_catalogue(settings_for(tmp_path, {"name": "acme", "source": source}))
            assert names(catalogue) == ["restart_pod", "log_search"], source
            restart = catalogue.get("restart_pod")
            assert (restart.index, restart.location) == ("acme", location)
            assert restart.latest().version == "1.1.0"
            assert [str(p) for p in catalogue.problems] == [
                "acme: agents[2] (broken).versions[0].package: a python agent's version needs its package"
            ]
            [status] = catalogue.indexes
            assert (status.title, status.agents, status.error, status.trusted_by) == ("acme", 2, "", "")
            assert catalogue.find("broken") is None


async def test_a_signed_index_over_http_loads_only_with_its_good_signature(acme, tmp_path):
    signer = Signer()
    index = acme / "index.json"
    source = {"name": "acme", "source": "", "public_key": signer.public_key}
    with serve_directory(acme) as served:
        source["source"] = f"{served.base}/index.json"

        async def problems() -> list[str]:
            catalogue = await load_catalogue(settings_for(tmp_path, source), refresh=True)
            return [str(p) for p in catalogue.problems if not p.where]

        assert await problems() == [
            "acme: the index has no signature (its .sig file), and a public_key is configured for it"
        ]
        signer.sign(index)
        assert await problems() == []
        assert served.requests[-2:] == ["/index.json", "/index.json.sig"]
        index.write_text(index.read_text().replace("restart_pod", "wipe_disks_"))  # tampered after signing
        refused = await problems()
        assert refused == [
            "acme: the index's signature does not verify with its configured public_key: "
            "the index or its .sig was changed, or signed with another key"
        ]
        catalogue = await load_catalogue(settings_for(tmp_path, source))
        assert catalogue.listings == () and catalogue.indexes[0].error == refused[0].removeprefix("acme: ")
        assert catalogue.indexes[0].trusted_by == "signature"


async def test_an_oversize_index_is_refused_from_a_file_and_over_http(tmp_path):
    root = tmp_path / "big"
    write_index(root, [], description="x" * 5000)
    with serve_directory(root) as served:
        settings = settings_for(tmp_path, str(root), f"{served.base}/index.json", agent_index_max_bytes=1024)
        catalogue = await load_catalogue(settings)
    assert [str(p) for p in catalogue.problems] == [
        f"{root}: {root}/index.json is larger than 1024 bytes (AGENT_INDEX_MAX_BYTES)",
        f"{served.base}/index.json: {served.base}/index.json is larger than 1024 bytes (AGENT_INDEX_MAX_BYTES)",
    ]


async def test_an_index_that_cannot_be_read_is_a_problem_while_the_others_load(acme, tmp_path):
    unreachable = closed_port_url().replace("/health", "/index.json")
    catalogue = await load_catalogue(
        settings_for(tmp_path, unreachable, str(tmp_path / "missing"), {"name": "acme", "source": str(acme)})
    )
    assert names(catalogue) == ["restart_pod", "log_search"]
    lines = [str(p) for p in catalogue.problems if not p.where]
    assert lines[0].startswith(f"{unreachable}: cannot fetch {unreachable}: ") and "connection" in lines[0]
    assert lines[1] == f"{tmp_path / 'missing'}: {tmp_path / 'missing'} does not exist"
    assert [status.error != "" for status in catalogue.indexes] == [True, True, False]


async def test_an_index_on_loopback_is_refused_unless_loopback_is_allowed(acme, tmp_path):
    with serve_directory(acme) as served:
        settings = settings_for(tmp_path, f"{served.base}/index.json", outbound_allow_loopback=False)
        catalogue = await load_catalogue(settings)
    assert catalogue.listings == ()
    assert "is loopback: refused (set OUTBOUND_ALLOW_LOOPBACK=true to allow)" in str(catalogue.problems[0])
    assert served.requests == []


async def test_when_two_indexes_offer_an_agent_the_first_configured_wins(acme, tmp_path):
    other = tmp_path / "other"
    wheel = agent_wheel(other / "wheels", "restart_pod", "9.0.0")
    write_index(other, [python_entry("restart_pod", {"9.0.0": wheel}, other)])
    settings = settings_for(tmp_path, {"name": "acme", "source": str(acme)}, {"name": "other", "source": str(other)})
    catalogue = await load_catalogue(settings)
    assert catalogue.get("restart_pod").index == "acme"
    assert str(catalogue.problems[-1]) == (
        "other: agents (restart_pod): also offered by index 'acme', configured before this one: left out"
    )
    same_name = settings_for(tmp_path, {"name": "acme", "source": str(acme)}, {"name": "acme", "source": str(other)})
    catalogue = await load_catalogue(same_name)
    assert str(catalogue.problems[-1]) == (
        "acme: another configured index has this name: left out (give each index its own name)"
    )


async def test_indexes_are_read_again_only_after_the_ttl_or_on_refresh_and_once_for_concurrent_callers(acme, tmp_path):
    with serve_directory(acme) as served:
        url = f"{served.base}/index.json"
        settings = settings_for(tmp_path, url, agent_index_ttl_seconds=3600)
        first, *others = await asyncio.gather(*(load_catalogue(settings) for _ in range(5)))
        assert all(other is first for other in others)
        assert served.requests == ["/index.json"]
        index = acme / "index.json"
        document = json.loads(index.read_text())
        document["agents"] = document["agents"][:1]
        index.write_text(json.dumps(document))
        assert names(await load_catalogue(settings)) == ["restart_pod", "log_search"]  # cached
        refreshed = await load_catalogue(settings, refresh=True)
        assert names(refreshed) == ["restart_pod"] and refreshed.fetched_at > first.fetched_at
        assert len(served.requests) == 2
        # Other settings (here: no cache at all) are another cache entry.
        uncached = settings_for(tmp_path, url, agent_index_ttl_seconds=0)
        await load_catalogue(uncached)
        await load_catalogue(uncached)
        assert len(served.requests) == 4


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_packages_are_fetched_relative_to_their_index_and_checked(acme, tmp_path):
    wheel = acme / "wheels" / "acme_restart_pod-1.1.0-py3-none-any.whl"
    with serve_directory(acme) as served:
        for source in (str(acme), f"{served.base}/index.json"):
            settings = settings_for(tmp_path, source)
            listing = (await load_catalogue(settings)).get("restart_pod")
            package = listing.latest().package
            assert package.url == "wheels/acme_restart_pod-1.1.0-py3-none-any.whl"
            assert await fetch_package(listing, package, settings) == wheel.read_bytes()
        assert served.requests[-1] == "/wheels/acme_restart_pod-1.1.0-py3-none-any.whl"
        # A local index may name a wheel by an absolute path, a file:// URL or an http(s) URL.
        local = Listing(index="acme", location=str(acme / "index.json"), agent=listing.agent)
        for url in (str(wheel), wheel.as_uri(), f"{served.base}/wheels/{wheel.name}"):
            assert (
                await fetch_package(local, PackageFile(url=url, sha256=package.sha256), settings) == wheel.read_bytes()
            )
        # An index read over HTTP never makes this machine read its own files.
        remote = Listing(index="acme", location=f"{served.base}/index.json", agent=listing.agent)
        with pytest.raises(PackageRefused, match="must be at an http\\(s\\) URL"):
            await fetch_package(remote, PackageFile(url=wheel.as_uri(), sha256=package.sha256), settings)
        # A leading / stays on the index's host.
        absolute = PackageFile(url=f"/wheels/{wheel.name}", sha256=package.sha256)
        assert await fetch_package(remote, absolute, settings) == wheel.read_bytes()
        with pytest.raises(PackageUnavailable, match="answered HTTP 404"):
            await fetch_package(remote, PackageFile(url="wheels/gone.whl", sha256=package.sha256), settings)


async def test_a_tampered_or_oversize_package_is_refused(acme, tmp_path):
    wheel = acme / "wheels" / "acme_restart_pod-1.1.0-py3-none-any.whl"
    with serve_directory(acme) as served:
        for source in (str(acme), f"{served.base}/index.json"):
            settings = settings_for(tmp_path, source)
            listing = (await load_catalogue(settings, refresh=True)).get("restart_pod")
            package = listing.latest().package
            expected = package.sha256
            original = wheel.read_bytes()
            wheel.write_bytes(original + b"tampered")
            with pytest.raises(PackageRefused) as refused:
                await fetch_package(listing, package, settings)
            assert f"its sha256 is {sha256(original + b'tampered')}, but index " in str(refused.value)
            assert str(refused.value).endswith(f"says {expected}: refused") and refused.value.status == 422
            wheel.write_bytes(original)
            small = settings.model_copy(update={"agent_package_max_bytes": 1024})
            with pytest.raises(PackageRefused, match=r"is larger than 1024 bytes \(AGENT_PACKAGE_MAX_BYTES\)"):
                await fetch_package(listing, package, small)
