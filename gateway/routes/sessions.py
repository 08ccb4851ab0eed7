"""Liveness sessions: ``POST /v1/liveness/sessions`` (create), ``GET .../{id}`` (read) and
``POST .../{id}/frames`` (submit 1..N frames as a ``liveness_check`` job).

A session is created synchronously (a row in Postgres, no job) and answered with its
nonce, once. A key sees and uses only the sessions it created (admin: all); any other
session id is 404 ``session_not_found``, so ids cannot be probed. Scope: verify.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from gateway import bodies
from gateway.auth import Caller, require
from gateway.problems import problem_responses
from gateway.routes.common import (
    SUBMISSION_RESPONSES,
    IdempotencyKeyHeader,
    WaitParam,
    answer_with_job,
    refuse_during_cooldown,
    submit,
    visible_session,
)
from gateway.routes.submissions import request_body
from gateway.state import gateway_state
from gateway.views import LivenessSessionOut, NewLivenessSessionOut, session_out
from shared.db.api_keys import Scope
from shared.producer import Origin
from shared.schemas import LivenessSessionCreate

router = APIRouter(prefix="/v1/liveness", tags=["liveness"])

SessionId = Annotated[UUID, Path(description="the session id")]


@router.post(
    "/sessions",
    status_code=201,
    response_model=NewLivenessSessionOut,
    responses=problem_responses(400, 401, 403, 422, 429, 503),
    summary="Create a liveness session (nonce, expiry, attempt cap)",
)
async def create_session(
    request: Request,
    body: LivenessSessionCreate,
    caller: Caller = Depends(require(Scope.VERIFY)),
) -> JSONResponse:
    """JSON: optional `user_id`, `channel`, and a shorter `ttl_s` or fewer `max_attempts`
    than configured. The answer holds the `nonce`, shown this once. Scope: verify."""
    state = gateway_state(request)
    created = await run_in_threadpool(
        lambda: state.client.create_liveness_session(
            user_id=body.user_id,
            channel=body.channel,
            ttl_s=body.ttl_s,
            max_attempts=body.max_attempts,
            origin=Origin(api_key_id=caller.key_id),
        )
    )
    location = {"Location": f"/v1/liveness/sessions/{created.session.session_id}"}
    return JSONResponse(session_out(created.to_dict(), caller), status_code=201, headers=location)


@router.get(
    "/sessions/{session_id}",
    response_model=LivenessSessionOut,
    responses=problem_responses(401, 403, 404, 422, 429, 503),
    summary="A liveness session's state",
)
async def get_session(
    request: Request, session_id: SessionId, caller: Caller = Depends(require(Scope.VERIFY))
) -> JSONResponse:
    """Status, attempts, expiry, the last decision and its reason codes. Scope: verify."""
    session = await visible_session(gateway_state(request), caller, session_id)
    return JSONResponse(session_out(session.public(), caller))


@router.post(
    "/sessions/{session_id}/frames",
    status_code=202,
    response_model=None,
    responses={
        **SUBMISSION_RESPONSES,
        **problem_responses(400, 401, 403, 404, 413, 415, 422, 429, 503),
    },
    openapi_extra=request_body(bodies.LIVENESS_CHECK),
    summary="Submit 1..N frames to a liveness session (a liveness_check job)",
)
async def submit_frames(
    request: Request,
    session_id: SessionId,
    wait: WaitParam = None,
    idempotency_key: IdempotencyKeyHeader = None,
    caller: Caller = Depends(require(Scope.VERIFY, submits=True)),
) -> JSONResponse:
    """Multipart: `nonce` and `frames` (1..FACEAUTH_LIVENESS_SESSION_MAX_FRAMES files); or
    JSON with `nonce` and `image_keys`. The job's result carries the decision (live,
    spoof, faces_differ, quality_failed), reason codes and the session's state; a session
    that is expired, decided or out of attempts fails the job with its own code. 429
    too_many_attempts while the session's user is in a cool-down. Scope: verify."""
    state = gateway_state(request)
    session = await visible_session(state, caller, session_id)
    if session.user_id is not None:
        await refuse_during_cooldown(state, session.user_id)
    body = await bodies.read_body(request, bodies.LIVENESS_CHECK, state.settings)
    job_id = await submit(
        state,
        caller,
        body.fingerprint,
        idempotency_key,
        lambda origin, key: state.client.submit_liveness_check(
            session_id, body.fields["nonce"], body.images, idempotency_key=key, origin=origin
        ),
    )
    return await answer_with_job(request, caller, job_id, wait)
