"""Schemathesis fuzzes the whole authenticated API over real HTTP: zero 5xx, zero schema violations."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

SCHEMATHESIS = Path(sys.prefix) / "bin" / "schemathesis"


async def test_api_survives_fuzzing(server, api, engine, worker, tmp_path):
    token = (await api.post("/api/me/tokens", json={"name": "fuzzer"})).json()["token"]
    await api.post("/api/teams", json={"name": "fuzz-team"})
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "run",
        f"{server}/api/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "not_a_server_error,response_schema_conformance,content_type_conformance",
        "--max-examples",
        "15",
        "--seed",
        "20261125",
        "--request-timeout",
        "20",
        # Revoking its own token would only stop the fuzzer; token revocation has its own tests.
        "--exclude-path",
        "/api/tokens/{token_id}",
        # A stream never ends, so it cannot be fuzzed; tests/api/test_live.py covers it.
        "--exclude-path",
        "/api/events/stream",
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    output, _ = await process.communicate()
    report = output.decode()
    assert process.returncode == 0, report[-6000:]
    operations = re.search(r"Operations:\s+(\d+) selected", report)
    assert operations and int(operations.group(1)) >= 15, report[-3000:]
