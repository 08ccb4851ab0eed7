"""Stable error codes. Clients branch on ``code``; ``message`` is for people.

A code, once published, never changes meaning. Permanent errors end a job as
``failed`` at once; transient ones are retried with backoff.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    # payload / input
    INVALID_PAYLOAD = "invalid_payload"
    IMAGE_NOT_FOUND = "image_not_found"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_TOO_MANY_PIXELS = "image_too_many_pixels"
    IMAGE_UNDECODABLE = "image_undecodable"
    IMAGE_TRUNCATED = "image_truncated"
    TOO_FEW_IMAGES = "too_few_images"
    TOO_MANY_IMAGES = "too_many_images"
    # enrollment / quality
    NO_FACE = "no_face"
    QUALITY_REJECTED = "quality_rejected"
    LIVENESS_REJECTED = "liveness_rejected"
    MIXED_IDENTITIES = "mixed_identities"
    DUPLICATE_IDENTITY = "duplicate_identity"
    # verification
    UNKNOWN_USER = "unknown_user"
    NO_TEMPLATES_FOR_MODEL = "no_templates_for_model"
    MODEL_VERSION_MISMATCH = "model_version_mismatch"
    # liveness sessions and attempt limits
    SESSION_NOT_FOUND = "session_not_found"  # no such session, or the nonce does not match
    SESSION_EXPIRED = "session_expired"
    SESSION_USED = "session_used"  # already passed (or consumed): it takes no more frames
    SESSION_ATTEMPTS_EXHAUSTED = "session_attempts_exhausted"
    SESSION_FACES_DIFFER = "session_faces_differ"  # reason: the frames show two people
    SESSION_NOT_PASSED = "session_not_passed"  # a verification named an undecided session
    SESSION_USER_MISMATCH = "session_user_mismatch"  # the session is another user's
    # Transient: the session changed between the job reading it and committing (another
    # attempt or verification got there first); the retry reports what happened to it.
    SESSION_RACE = "session_race"
    TOO_MANY_ATTEMPTS = "too_many_attempts"  # the user is in a cool-down (retry_after)
    # administration
    USER_DELETED = "user_deleted"  # the job's user was erased before the job ran
    # calibration
    CALIBRATION_INSUFFICIENT_DATA = "calibration_insufficient_data"
    # models / infrastructure
    MODEL_PACK_INVALID = "model_pack_invalid"
    LIVENESS_MODEL_INVALID = "liveness_model_invalid"
    ONNX_PROVIDER_UNAVAILABLE = "onnx_provider_unavailable"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    BROKER_UNAVAILABLE = "broker_unavailable"
    DATABASE_UNAVAILABLE = "database_unavailable"
    RETRIES_EXHAUSTED = "retries_exhausted"
    # delivery: the message, not the input, is at fault
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"  # same key, different request
    JOB_CONFLICT = "job_conflict"  # a message names a job whose kind/subject/payload differ
    DELIVERY_ATTEMPTS_EXHAUSTED = "delivery_attempts_exhausted"  # re-published too often
    INTERNAL = "internal_error"
    # An erasure found images of the user that appeared after it listed them (an enrollment
    # committed meanwhile). Transient: the deletion rolls back and its retry lists them too.
    DELETION_RACE = "deletion_race"
    # HTTP gateway: the request itself is refused before any job exists (problem+json)
    REQUEST_TOO_LARGE = "request_too_large"  # 413: the body passed gateway_max_request_bytes
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415: not JSON/multipart, not an image
    MALFORMED_REQUEST = "malformed_request"  # 400: broken multipart or JSON syntax
    UNAUTHENTICATED = "unauthenticated"  # 401: no API key, an unknown or a revoked one
    INSUFFICIENT_SCOPE = "insufficient_scope"  # 403: the key lacks the route's scope
    NOT_FOUND = "not_found"  # 404: no such route, or a job this key may not see
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405
    RATE_LIMITED = "rate_limited"  # 429: the key's request rate (Retry-After)
    TOO_MANY_FAILED_VERIFICATIONS = "too_many_failed_verifications"  # 429: per user_id


class FaceauthError(Exception):
    """An error with a stable code, a human message and JSON-safe details."""

    transient: bool = False

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class TransientError(FaceauthError):
    """A fault outside the request (storage, database) that a retry may clear."""

    transient = True


class ModelLoadError(FaceauthError):
    """A model folder is missing or broken: a deployment error, not a request error."""
