"""What the job routes share: the ``wait`` and ``Idempotency-Key`` parameters, submitting
through the producer, and answering 202 / 200 with the job."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import Header, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from gateway.auth import Caller
from gateway.fingerprint import scoped_idempotency_key
from gateway.problems import Problem
from gateway.state import GatewayState, gateway_state
from gateway.views import JobAccepted, JobOut, accepted, job_out
from gateway.waiting import wait_for_outcome
from shared.db import attempts as attempt_repo
from shared.db import jobs as job_repo
from shared.db.liveness_sessions import LivenessSession
from shared.db.pool import get_pool
from shared.errors import ErrorCode
from shared.producer import Origin
from shared.schemas import JobView

log = logging.getLogger(__name__)

WaitParam = Annotated[
    float | None,
    Query(
        ge=0,
        description="seconds to wait for the outcome (capped at FACEAUTH_GATEWAY_WAIT_MAX_S):"
        " 200 with the job when it finished in time, else 202",
    ),
]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=150,
        pattern=r'^"?[\x21-\x7e]+"?$',
        description="retrying with the same key and body returns the same job; the same key"
        " with another body is refused (422 idempotency_key_reused). Scoped to your API key.",
    ),
]

SubmitCall = Callable[[Origin, str | None], UUID]


def _unquote(header: str) -> str:
    # The IETF draft makes the value a structured-field string ("..."); plain tokens, as
    # most clients send them, are accepted too and mean the same key.
    if len(header) >= 2 and header[0] == header[-1] == '"':
        return header[1:-1]
    return header


async def submit(
    state: GatewayState,
    caller: Caller,
    fingerprint: str,
    idempotency_key: str | None,
    call: SubmitCall,
) -> UUID:
    """Run a producer submission in the threadpool, as ``caller``, under its scoped key."""
    origin = Origin(api_key_id=caller.key_id, fingerprint=fingerprint)
    key = None
    if idempotency_key is not None:
        key = scoped_idempotency_key(caller.key_id, _unquote(idempotency_key))
    job_id = await run_in_threadpool(call, origin, key)
    log.info("job %s submitted by key %s", job_id, caller.key_id)
    return job_id


def _read(state: GatewayState, job_id: UUID) -> JobView | None:
    with get_pool(state.settings).connection() as conn:
        return job_repo.get_job(conn, job_id)


async def read_job(state: GatewayState, job_id: UUID) -> JobView | None:
    return await run_in_threadpool(_read, state, job_id)


def visible(job: JobView | None, caller: Caller) -> JobView:
    """The job when ``caller`` may see it: its own jobs, or any with admin; else 404."""
    if job is None or not (caller.is_admin or job.api_key_id == caller.key_id):
        raise Problem(ErrorCode.NOT_FOUND, "no such job for this API key")
    return job


async def visible_session(state: GatewayState, caller: Caller, session_id: UUID) -> LivenessSession:
    """A liveness session ``caller`` created (any with admin); else 404 session_not_found,
    the same answer whether it does not exist or is another key's."""
    session = await run_in_threadpool(state.client.get_liveness_session, session_id)
    if session is None or not (caller.is_admin or session.api_key_id == caller.key_id):
        raise Problem(ErrorCode.SESSION_NOT_FOUND, "no such liveness session for this API key")
    return session


def _cooldown_left(state: GatewayState, user_id: str) -> float | None:
    with get_pool(state.settings).connection() as conn:
        return attempt_repo.cooldown_remaining(conn, user_id)


async def refuse_during_cooldown(state: GatewayState, user_id: str) -> None:
    """429 too_many_attempts while the user is in a cool-down (workers/pipeline/attempts.py).

    The worker refuses such a job anyway; answering here spares the upload and the job."""
    left = await run_in_threadpool(_cooldown_left, state, user_id)
    if left is None:
        return
    retry_after = max(1, math.ceil(left))
    raise Problem(
        ErrorCode.TOO_MANY_ATTEMPTS,
        f"too many failed attempts for this user; try again in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
        retry_after=retry_after,
    )


async def read_or_wait(
    request: Request, state: GatewayState, caller: Caller, job_id: UUID, wait: float | None
) -> JobView:
    """The job if ``caller`` may see it (else 404), now or, with ``wait``, once it finished
    (waiting at most ``gateway_wait_max_s``)."""
    with state.wakeups.watch(job_id) as woken:  # before the first read: no hint is missed
        job = visible(await read_job(state, job_id), caller)
        if not wait or job.status.finished:
            return job
        waited = await wait_for_outcome(
            lambda: read_job(state, job_id),
            min(wait, state.settings.gateway_wait_max_s),
            gone=request.is_disconnected,
            woken=woken if state.wakeups.connected else None,
        )
    return waited or job


async def answer_with_job(
    request: Request, caller: Caller, job_id: UUID, wait: float | None
) -> JSONResponse:
    """202 with the job's id and status, or 200 with the job when ``wait`` saw it finish."""
    state = gateway_state(request)
    location = {"Location": f"/v1/jobs/{job_id}"}
    job = await read_or_wait(request, state, caller, job_id, wait)
    if wait and job.status.finished:
        return JSONResponse(job_out(job, caller), status_code=200, headers=location)
    return JSONResponse(accepted(job.job_id, job.status), status_code=202, headers=location)


SUBMISSION_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": JobAccepted, "description": "recorded and queued (Location: the job)"},
    200: {"model": JobOut, "description": "with ?wait: the job finished in time"},
}
