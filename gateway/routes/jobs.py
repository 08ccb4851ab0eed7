"""``GET /v1/jobs/{job_id}``: a job's durable record, optionally waiting for its outcome.

A key without admin sees only the jobs it submitted (others are 404, not 403: it learns
nothing about other tenants' job ids), and no raw liveness scores.
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from gateway.auth import Caller, require
from gateway.problems import problem_responses
from gateway.routes.common import WaitParam, read_or_wait
from gateway.state import gateway_state
from gateway.views import JobOut, job_out

router = APIRouter(prefix="/v1", tags=["jobs"])


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    responses=problem_responses(401, 404, 422, 429, 503),
    summary="A job's status and outcome",
)
async def get_job(
    request: Request,
    job_id: UUID,
    wait: WaitParam = None,
    caller: Caller = Depends(require(None)),
) -> JSONResponse:
    """Any scope. With `wait`, answers as soon as the job finished (or when the wait is
    over, with the job as it is then)."""
    job = await read_or_wait(request, gateway_state(request), caller, job_id, wait)
    return JSONResponse(job_out(job, caller))
