"""``GET /v1/users/{user_id}`` (enrollment state) and ``DELETE`` (right to erasure).

Both need the admin scope. The read shows counts and dates per model version, never
embeddings or images; the deletion is an erasure job like ``faceauth user delete``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from gateway.auth import Caller, require
from gateway.fingerprint import request_fingerprint
from gateway.problems import Problem, problem_responses
from gateway.routes.common import (
    SUBMISSION_RESPONSES,
    IdempotencyKeyHeader,
    WaitParam,
    answer_with_job,
    submit,
)
from gateway.state import GatewayState, gateway_state
from gateway.views import UserOut, user_out
from shared.db.api_keys import Scope
from shared.db.enrollments import UserEnrollmentState, enrollment_state
from shared.db.pool import get_pool
from shared.errors import ErrorCode
from shared.schemas import USER_ID_PATTERN, JobKind

router = APIRouter(prefix="/v1", tags=["users"])

UserId = Annotated[str, Path(pattern=USER_ID_PATTERN, description="the user id")]


def _state_of(state: GatewayState, user_id: str) -> UserEnrollmentState | None:
    with get_pool(state.settings).connection() as conn:
        return enrollment_state(conn, user_id)


@router.get(
    "/users/{user_id}",
    response_model=UserOut,
    responses=problem_responses(401, 403, 404, 422, 429, 503),
    summary="A user's enrollment state per model version",
)
async def get_user(
    request: Request, user_id: UserId, caller: Caller = Depends(require(Scope.ADMIN))
) -> JSONResponse:
    """Template counts, dates and the active flag per model version. Scope: admin."""
    found = await run_in_threadpool(_state_of, gateway_state(request), user_id)
    if found is None:
        raise Problem(ErrorCode.UNKNOWN_USER, f"no enrolled user {user_id!r}")
    return JSONResponse(user_out(found))


@router.delete(
    "/users/{user_id}",
    status_code=202,
    response_model=None,
    responses={**SUBMISSION_RESPONSES, **problem_responses(401, 403, 422, 429, 503)},
    summary="Erase a user (templates, images, pending jobs)",
)
async def delete_user(
    request: Request,
    user_id: UserId,
    wait: WaitParam = None,
    idempotency_key: IdempotencyKeyHeader = None,
    caller: Caller = Depends(require(Scope.ADMIN, submits=True)),
) -> JSONResponse:
    """Submits an erasure job (IO queue). Scope: admin."""
    state = gateway_state(request)
    fingerprint = request_fingerprint(JobKind.DELETE_USER, {"user_id": user_id}, [])
    job_id = await submit(
        state,
        caller,
        fingerprint,
        idempotency_key,
        lambda origin, key: state.client.submit_user_deletion(
            user_id, idempotency_key=key, origin=origin
        ),
    )
    return await answer_with_job(request, caller, job_id, wait)
