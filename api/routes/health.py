"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.auth import public
from api.deps import EngineDep, TemporalDep
from api.errors import DEPENDENCY_RETRY_AFTER
from core.db import ping

router = APIRouter(tags=["health"], dependencies=[public("health checks for load balancers and probes")])
CHECK_TIMEOUT = 3.0


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is unreachable"}})
async def readyz(engine: EngineDep, temporal: TemporalDep) -> JSONResponse:
    """Postgres and Temporal are reachable; 503 naming the failing part otherwise (with Retry-After)."""

    async def check_postgres() -> None:
        await asyncio.wait_for(run_in_threadpool(ping, engine), CHECK_TIMEOUT)

    async def check_temporal() -> None:
        await asyncio.wait_for(temporal.service_client.check_health(), CHECK_TIMEOUT)

    checks: dict[str, Any] = {}
    results = await asyncio.gather(check_postgres(), check_temporal(), return_exceptions=True)
    for name, result in zip(("postgres", "temporal"), results, strict=True):
        if isinstance(result, BaseException):
            reason = str(result).splitlines()[0] if str(result) else type(result).__name__
            checks[name] = {"ok": False, "error": reason[:300]}
        else:
            checks[name] = {"ok": True}
    failing = [name for name, check in checks.items() if not check["ok"]]
    body = {"status": "ready" if not failing else "unavailable", "failing": failing, "checks": checks}
    if failing:
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(DEPENDENCY_RETRY_AFTER)})
    return JSONResponse(body)
