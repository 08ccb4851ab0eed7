"""The gateway's ASGI application: ``create_app()`` (uvicorn runs it as a factory).

Middleware, outermost first: metrics (counts every answer), the body-size limit (413
while streaming), then FastAPI's routing with the problem+json exception handlers. The
lifespan builds the per-process state: the producer client (Celery app, S3 client; the
database pool is made on first use), the per-key rate limiter, the failure counter and the
outcome wake-up listener.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from gateway.apidoc import API_VERSION, install_openapi
from gateway.bodylimit import BodyLimit
from gateway.metrics import MetricsMiddleware
from gateway.problems import install_handlers
from gateway.ratelimit import KeyRateLimiter, VerificationFailureLimit
from gateway.routes import jobs, ops, sessions, submissions, users
from gateway.state import GatewayState
from gateway.wakeup import OutcomeWakeups
from shared.config import Settings, get_settings
from shared.db.pool import close_pool
from shared.producer import FaceauthClient

log = logging.getLogger(__name__)

DESCRIPTION = """\
faceauth's HTTP API: enroll faces, verify and identify probes, scan photo quality, erase
users. Submissions are asynchronous: 202 with the job id (Location: /v1/jobs/{id}), or 200
with the outcome when `?wait=<seconds>` saw the job finish. Authenticate with
`Authorization: Bearer fa_<id>_<secret>` (or `X-API-Key`). Errors are RFC 9457
`application/problem+json` with a stable `code`. `Idempotency-Key` makes retries safe.
"""


def _ensure_bucket(client: FaceauthClient) -> None:
    # Workers create the bucket when they start; a gateway that starts first must not
    # answer its first uploads with NoSuchBucket. S3 being down is no reason not to start:
    # /readyz says so until it is back.
    try:
        client.store.ensure_bucket()
    except Exception as exc:
        log.warning("could not ensure the image bucket exists: %s", type(exc).__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A gateway app for ``settings`` (default: the process's ``FACEAUTH_*`` environment).

    Building it connects to nothing; the lifespan does, lazily.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = FaceauthClient(settings)
        wakeups = OutcomeWakeups(settings.result_backend_url)
        app.state.gateway = GatewayState(
            settings=settings,
            client=client,
            limiter=KeyRateLimiter(settings),
            failures=VerificationFailureLimit(settings),
            wakeups=wakeups,
        )
        await run_in_threadpool(_ensure_bucket, client)
        wakeups.start()
        try:
            yield
        finally:
            await wakeups.stop()
            close_pool()

    app = FastAPI(
        title="faceauth gateway",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served by routes/ops.py behind an API key instead (every UI route needs auth).
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_handlers(app)
    for module in (submissions, sessions, jobs, users, ops):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=settings.gateway_max_request_bytes)
    app.add_middleware(MetricsMiddleware)  # added last = outermost
    install_openapi(app)
    return app
