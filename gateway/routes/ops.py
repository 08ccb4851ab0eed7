"""Health, readiness, metrics, problem types and the API docs.

- ``/healthz``: the process answers (no dependencies checked; liveness probes).
- ``/readyz``: Postgres, Redis and S3 all reachable, else 503 (readiness probes, the
  compose healthcheck). Open, like ``/healthz``: it tells only up or down.
- ``/metrics``: Prometheus, behind an admin API key (Prometheus sends it as a bearer
  token), like every UI and metrics route of the project.
- ``/docs`` and ``/openapi.json``: behind any valid API key; browsers are asked for basic
  auth (any user name, the token as password).
- ``/problems/{code}``: what a problem ``type`` stands for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis
from fastapi import APIRouter, Depends, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from gateway.auth import BASIC_CHALLENGE, Caller, require
from gateway.metrics import exposition
from gateway.problems import PROBLEM_TYPES, Problem, problem_type
from gateway.state import GatewayState, gateway_state
from shared.db.api_keys import Scope
from shared.db.pool import get_pool
from shared.errors import ErrorCode

router = APIRouter()
PROBE_TIMEOUT_S = 2.0
OPENAPI_URL = "/openapi.json"


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _postgres(state: GatewayState) -> None:
    with get_pool(state.settings).connection(timeout=PROBE_TIMEOUT_S) as conn:
        conn.execute("SELECT 1")


def _redis(state: GatewayState) -> None:
    client = redis.Redis.from_url(
        state.settings.broker_url,
        socket_timeout=PROBE_TIMEOUT_S,
        socket_connect_timeout=PROBE_TIMEOUT_S,
    )
    try:
        client.ping()
    finally:
        client.close()


def _s3(state: GatewayState) -> None:
    # A listing, not a write: the bucket exists and the keys are accepted.
    state.client.store.list_keys("readyz/")


_CHECKS: dict[str, tuple[Callable[[GatewayState], None], ErrorCode]] = {
    "postgres": (_postgres, ErrorCode.DATABASE_UNAVAILABLE),
    "redis": (_redis, ErrorCode.BROKER_UNAVAILABLE),
    "s3": (_s3, ErrorCode.STORAGE_UNAVAILABLE),
}


async def _probe(check: Callable[[GatewayState], None], state: GatewayState) -> str:
    try:
        await asyncio.wait_for(run_in_threadpool(check, state), timeout=PROBE_TIMEOUT_S * 2)
    except Exception as exc:  # any failure means "not ready"; the name says which
        return f"unavailable ({type(exc).__name__})"
    return "ok"


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    state = gateway_state(request)
    names = list(_CHECKS)
    results = await asyncio.gather(*(_probe(_CHECKS[n][0], state) for n in names))
    checks = dict(zip(names, results, strict=True))
    failed = [n for n in names if checks[n] != "ok"]
    if failed:
        code = _CHECKS[failed[0]][1]
        raise Problem(
            code,
            f"not ready: {', '.join(failed)} unavailable",
            headers={"Retry-After": "5"},
            checks=checks,
        )
    return JSONResponse({"status": "ready", "checks": checks})


@router.get("/metrics", include_in_schema=False)
async def metrics(_caller: Caller = Depends(require(Scope.ADMIN, rate_limited=False))) -> Response:
    body, content_type = await run_in_threadpool(exposition)
    return Response(body, media_type=content_type)


@router.get("/problems/{code}", include_in_schema=False)
async def problem_description(code: str) -> dict[str, Any]:
    try:
        known = ErrorCode(code)
        status, title = PROBLEM_TYPES[known]
    except (ValueError, KeyError):
        raise Problem(ErrorCode.NOT_FOUND, f"no problem type {code!r}") from None
    return {"type": problem_type(known), "code": code, "status": status, "title": title}


_docs_auth = require(None, challenge=BASIC_CHALLENGE, rate_limited=False)


@router.get(OPENAPI_URL, include_in_schema=False)
async def openapi_document(request: Request, _caller: Caller = Depends(_docs_auth)) -> Response:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False)
async def docs(_caller: Caller = Depends(_docs_auth)) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=OPENAPI_URL, title="faceauth gateway")
