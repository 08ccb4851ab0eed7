"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error response carries ``type``, ``title``, ``status``, ``detail`` and our stable
``code`` (``shared.errors.ErrorCode``); validation errors add ``errors`` (one entry per
field). ``type`` is ``/problems/<code>``, a relative reference the gateway itself serves
(``GET /problems/{code}``), so a client that follows it gets the title and status; clients
branch on ``code``.

Infrastructure failures map to 503 with the component's code: Postgres
(``database_unavailable``), Redis (``broker_unavailable``), S3 (``storage_unavailable``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

import psycopg
import psycopg_pool
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as KombuOperationalError
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import ErrorCode, FaceauthError
from shared.producer import IdempotencyKeyReused

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
# Seconds a client should wait before retrying when a backing service is down.
UNAVAILABLE_RETRY_AFTER_S = 5

# The problems the gateway answers with: code -> (status, title). Served at /problems/{code}.
PROBLEM_TYPES: Mapping[ErrorCode, tuple[int, str]] = {
    ErrorCode.MALFORMED_REQUEST: (400, "The request body could not be parsed"),
    ErrorCode.UNAUTHENTICATED: (401, "A valid API key is required"),
    ErrorCode.INSUFFICIENT_SCOPE: (403, "The API key lacks the scope this route needs"),
    ErrorCode.NOT_FOUND: (404, "Not found"),
    ErrorCode.UNKNOWN_USER: (404, "No such user"),
    ErrorCode.SESSION_NOT_FOUND: (404, "No such liveness session"),
    ErrorCode.METHOD_NOT_ALLOWED: (405, "Method not allowed"),
    ErrorCode.REQUEST_TOO_LARGE: (413, "The request body is too large"),
    ErrorCode.IMAGE_TOO_LARGE: (413, "An uploaded image is too large"),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: (415, "Unsupported media type"),
    ErrorCode.INVALID_PAYLOAD: (422, "The request has invalid fields"),
    ErrorCode.TOO_FEW_IMAGES: (422, "Too few images"),
    ErrorCode.TOO_MANY_IMAGES: (422, "Too many images"),
    ErrorCode.IDEMPOTENCY_KEY_REUSED: (422, "The idempotency key was used for another request"),
    ErrorCode.RATE_LIMITED: (429, "Too many requests for this API key"),
    ErrorCode.TOO_MANY_FAILED_VERIFICATIONS: (429, "Too many failed verifications of this user"),
    ErrorCode.TOO_MANY_ATTEMPTS: (429, "The user is in a cool-down after failed attempts"),
    ErrorCode.INTERNAL: (500, "Internal error"),
    ErrorCode.DATABASE_UNAVAILABLE: (503, "The database is unavailable"),
    ErrorCode.BROKER_UNAVAILABLE: (503, "The message broker is unavailable"),
    ErrorCode.STORAGE_UNAVAILABLE: (503, "Image storage is unavailable"),
}


def problem_type(code: ErrorCode | str) -> str:
    return f"/problems/{code}"


class Problem(Exception):
    """An error response; raise it anywhere in a request, the app turns it into JSON."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        default_status, title = PROBLEM_TYPES.get(code, (500, HTTPStatus(500).phrase))
        self.code = code
        self.status = status or default_status
        self.title = title if status in (None, default_status) else HTTPStatus(self.status).phrase
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {
            "type": problem_type(self.code),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": str(self.code),
            **self.extra,
        }

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.body(), status_code=self.status, headers=self.headers, media_type=MEDIA_TYPE
        )


def field_errors(errors: Iterable[Mapping[str, Any]], *, drop: int = 0) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field", "message", "type"}``; ``drop`` leading loc parts
    (FastAPI puts "query"/"header" first). Input values are left out: they may be secrets
    (an API key in a wrong header) or large."""
    out = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())][drop:]
        out.append(
            {
                "field": ".".join(loc) or "body",
                "message": str(error.get("msg", "")),
                "type": str(error.get("type", "")),
            }
        )
    return out


def invalid(errors: list[dict[str, str]], detail: str | None = None) -> Problem:
    fields = ", ".join(sorted({e["field"] for e in errors}))
    return Problem(ErrorCode.INVALID_PAYLOAD, detail or f"invalid fields: {fields}", errors=errors)


def unavailable(code: ErrorCode, what: str) -> Problem:
    return Problem(
        code,
        f"{what} is unavailable; retry later",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
    )


# --- exception handlers ---------------------------------------------------------------------


async def _problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return exc.response()


async def _request_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # loc is ("query"|"path"|"header", name): the first part says where, the field is enough.
    return invalid(field_errors(exc.errors(), drop=1)).response()


async def _pydantic_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    return invalid(field_errors(exc.errors())).response()


async def _http_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}
    code = codes.get(exc.status_code, ErrorCode.INVALID_PAYLOAD)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    problem = Problem(code, detail, status=exc.status_code, headers=exc.headers)
    return problem.response()


async def _idempotency_reused(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IdempotencyKeyReused)
    return Problem(
        ErrorCode.IDEMPOTENCY_KEY_REUSED,
        "this Idempotency-Key was used for a different request",
        job_id=str(exc.details.get("job_id", "")),
    ).response()


async def _faceauth_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FaceauthError)
    if exc.transient or (exc.code in PROBLEM_TYPES and PROBLEM_TYPES[exc.code][0] == 503):
        log.warning("request failed: %s (%s)", exc.code, exc.message)
        return unavailable(exc.code, "a backing service").response()
    return Problem(exc.code, exc.message, status=422).response()


async def _database_down(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", type(exc).__name__)
    return unavailable(ErrorCode.DATABASE_UNAVAILABLE, "the database").response()


async def _broker_down(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("broker unavailable: %s", type(exc).__name__)
    return unavailable(ErrorCode.BROKER_UNAVAILABLE, "the message broker").response()


async def _internal(_request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log (it never holds request bodies); the client gets a code.
    log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
    return Problem(ErrorCode.INTERNAL, "internal error").response()


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _internal)
    app.add_exception_handler(Problem, _problem)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _pydantic_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(IdempotencyKeyReused, _idempotency_reused)
    app.add_exception_handler(FaceauthError, _faceauth_error)
    for db_error in (psycopg.OperationalError, psycopg_pool.PoolTimeout):
        app.add_exception_handler(db_error, _database_down)
    for broker_error in (
        KombuOperationalError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
    ):
        app.add_exception_handler(broker_error, _broker_down)


# --- documentation ----------------------------------------------------------------------------


class FieldError(BaseModel):
    field: str
    message: str
    type: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, served as application/problem+json."""

    type: str = Field(description="/problems/<code>: GET it for the title and status")
    title: str
    status: int
    detail: str
    code: str = Field(description="stable error code; branch on this")
    errors: list[FieldError] | None = Field(None, description="validation errors, per field")


_DESCRIPTIONS = {
    400: "malformed multipart or JSON (malformed_request)",
    401: "no API key, or an unknown or revoked one (unauthenticated)",
    403: "the key lacks the route's scope (insufficient_scope)",
    404: "no such job for this key, no such user, or no liveness session of this key"
    " (not_found, unknown_user, session_not_found)",
    413: "body over FACEAUTH_GATEWAY_MAX_REQUEST_BYTES (request_too_large) or an image over"
    " FACEAUTH_MAX_IMAGE_BYTES (image_too_large), refused while streaming",
    415: "not multipart/form-data or JSON, or a file that is not a JPEG/PNG/WebP/BMP image"
    " (unsupported_media_type)",
    422: "invalid or unknown fields (invalid_payload, too_few_images, too_many_images),"
    " Idempotency-Key reused with another body (idempotency_key_reused)",
    429: "rate limit of the key (rate_limited), failed verifications of the user"
    " (too_many_failed_verifications) or the user's cool-down after failed liveness or"
    " verification attempts (too_many_attempts); see Retry-After",
    503: "Postgres, Redis or S3 unavailable (database_unavailable, broker_unavailable,"
    " storage_unavailable); see Retry-After",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses (problem+json, see openapi)."""
    return {s: {"model": ProblemDetails, "description": _DESCRIPTIONS[s]} for s in statuses}
