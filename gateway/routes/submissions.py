"""``POST /v1/enrollments``, ``/verifications``, ``/identifications``, ``/quality-scans``.

Each authenticates first (nothing is read from an unauthenticated body), reads and checks
the body (``bodies``), submits through the producer (upload, job row, message) and
answers 202, or 200 with the outcome when ``?wait`` saw the job finish.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from gateway import bodies
from gateway.auth import Caller, require
from gateway.bodies import BodySpec
from gateway.problems import Problem, problem_responses
from gateway.routes.common import (
    SUBMISSION_RESPONSES,
    IdempotencyKeyHeader,
    WaitParam,
    answer_with_job,
    refuse_during_cooldown,
    submit,
    visible_session,
)
from gateway.state import gateway_state
from shared.db.api_keys import Scope
from shared.errors import ErrorCode

router = APIRouter(prefix="/v1", tags=["jobs"])

ERRORS = problem_responses(400, 401, 403, 413, 415, 422, 429, 503)


def request_body(spec: BodySpec) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its body itself (streaming)."""
    form = spec.form_fields.model_json_schema()
    file_schema: dict[str, Any] = {"type": "string", "format": "binary"}
    form["properties"] = {
        **form.get("properties", {}),
        spec.file_field: {"type": "array", "items": file_schema} if spec.many else file_schema,
    }
    if not spec.optional:
        form["required"] = [*form.get("required", []), spec.file_field]
    form["title"] = f"{spec.json_model.__name__.removesuffix('Json')}Form"
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": form},
                "application/json": {"schema": spec.json_model.model_json_schema()},
            },
        }
    }


def _route(spec: BodySpec, summary: str, *extra_errors: int) -> dict[str, Any]:
    return {
        "status_code": 202,
        "response_model": None,
        "responses": {**SUBMISSION_RESPONSES, **ERRORS, **problem_responses(*extra_errors)},
        "openapi_extra": request_body(spec),
        "summary": summary,
    }


@router.post("/enrollments", **_route(bodies.ENROLL, "Enroll a user's face (1-3 photos)"))
async def create_enrollment(
    request: Request,
    wait: WaitParam = None,
    idempotency_key: IdempotencyKeyHeader = None,
    caller: Caller = Depends(require(Scope.ENROLL, submits=True)),
) -> JSONResponse:
    """Multipart: `user_id`, `images` (1-3 files), optional `liveness`; or JSON with
    `image_keys` of photos already in the bucket. Scope: enroll."""
    state = gateway_state(request)
    body = await bodies.read_body(request, bodies.ENROLL, state.settings)
    fields = body.fields
    job_id = await submit(
        state,
        caller,
        body.fingerprint,
        idempotency_key,
        lambda origin, key: state.client.submit_enrollment(
            fields["user_id"],
            body.images,
            idempotency_key=key,
            liveness=fields["liveness"],
            channel=fields["channel"],
            origin=origin,
        ),
    )
    return await answer_with_job(request, caller, job_id, wait)


@router.post("/verifications", **_route(bodies.VERIFY, "Verify a probe against a user (1:1)", 404))
async def create_verification(
    request: Request,
    wait: WaitParam = None,
    idempotency_key: IdempotencyKeyHeader = None,
    caller: Caller = Depends(require(Scope.VERIFY, submits=True)),
) -> JSONResponse:
    """Multipart: `user_id`, `image`, optional `liveness`; or JSON with `image_key`.
    With `liveness_session_id` (a passed liveness session of this key) send no image: the
    session's frame is the probe. Scope: verify. Refused with 429 after too many failed
    verifications of the user, and during the user's cool-down (too_many_attempts)."""
    state = gateway_state(request)
    body = await bodies.read_body(request, bodies.VERIFY, state.settings)
    fields = body.fields
    session_id = fields.get("liveness_session_id")
    if session_id is None and not body.images:
        raise Problem(
            ErrorCode.INVALID_PAYLOAD,
            "send an image (image_key) or a liveness_session_id",
            errors=[{"field": "image", "message": "an image is needed", "type": "missing"}],
        )
    if session_id is not None:
        await visible_session(state, caller, UUID(session_id))
    await state.failures.check(fields["user_id"])
    await refuse_during_cooldown(state, fields["user_id"])
    job_id = await submit(
        state,
        caller,
        body.fingerprint,
        idempotency_key,
        lambda origin, key: state.client.submit_verification(
            fields["user_id"],
            body.images[0] if body.images else None,
            idempotency_key=key,
            liveness=fields["liveness"],
            channel=fields["channel"],
            liveness_session_id=None if session_id is None else UUID(session_id),
            origin=origin,
        ),
    )
    return await answer_with_job(request, caller, job_id, wait)


@router.post("/identifications", **_route(bodies.IDENTIFY, "Search a probe over everyone (1:N)"))
async def create_identification(
    request: Request,
    wait: WaitParam = None,
    idempotency_key: IdempotencyKeyHeader = None,
    caller: Caller = Depends(require(Scope.IDENTIFY, submits=True)),
) -> JSONResponse:
    """Multipart: `image`, optional `top_k` and `liveness`; or JSON with
    `image_key`. Scope: identify."""
    state = gateway_state(request)
    body = await bodies.read_body(request, bodies.IDENTIFY, state.settings)
    fields = body.fields
    job_id = await submit(
        state,
        caller,
        body.fingerprint,
        idempotency_key,
        lambda origin, key: state.client.submit_identification(
            body.images[0],
            top_k=fields["top_k"],
            idempotency_key=key,
            liveness=fields["liveness"],
            channel=fields["channel"],
            origin=origin,
        ),
    )
    return await answer_with_job(request, caller, job_id, wait)


@router.post("/quality-scans", **_route(bodies.QUALITY_SCAN, "Quality metrics of photos"))
async def create_quality_scan(
    request: Request,
    wait: WaitParam = None,
    idempotency_key: IdempotencyKeyHeader = None,
    caller: Caller = Depends(require(Scope.ADMIN, submits=True)),
) -> JSONResponse:
    """Multipart: `images` (1..N files); or JSON with `image_keys`. Scope: admin."""
    state = gateway_state(request)
    body = await bodies.read_body(request, bodies.QUALITY_SCAN, state.settings)
    job_id = await submit(
        state,
        caller,
        body.fingerprint,
        idempotency_key,
        lambda origin, key: state.client.submit_quality_scan(
            body.images, idempotency_key=key, origin=origin
        ),
    )
    return await answer_with_job(request, caller, job_id, wait)
