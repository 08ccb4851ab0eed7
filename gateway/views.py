"""What the gateway answers: response models (they document the API) and their rendering.

Results go to a key without the admin scope through ``redact.strip_spoof_scores``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from gateway.auth import Caller
from gateway.redact import strip_spoof_scores
from shared.db.enrollments import UserEnrollmentState
from shared.schemas import JobKind, JobStatus, JobView


class JobAccepted(BaseModel):
    """202: the job is recorded and queued; poll ``Location`` or wait for the webhook."""

    job_id: UUID
    status: JobStatus


class JobError(BaseModel):
    code: str = Field(description="stable error code (README, Errors)")
    message: str


class JobOut(BaseModel):
    """A job's durable record: its outcome once ``status`` is succeeded or failed."""

    job_id: UUID
    kind: JobKind
    status: JobStatus
    user_id: str | None = None
    result: dict[str, Any] | None = Field(
        None, description="the job's result; raw liveness scores only for admin keys"
    )
    error: JobError | None = None
    attempts: int = 0
    api_key_id: str | None = Field(None, description="the key that submitted it")
    created_at: datetime | None = None
    finished_at: datetime | None = None


class EnrollmentOut(BaseModel):
    model_version: str
    model_name: str
    enrollment_id: UUID
    image_templates: int = Field(description="active per-image templates")
    mean_template: bool = Field(description="the active mean template exists")
    n_images: int
    liveness_checked: bool
    created_at: datetime
    active_model_version: bool = Field(
        description="this model version is the one 1:N search and duplicate checks use"
    )


class UserOut(BaseModel):
    """A user's enrollment state per model version (never embeddings or images)."""

    user_id: str
    created_at: datetime
    updated_at: datetime
    enrollments: list[EnrollmentOut]


def accepted(job_id: UUID, status: JobStatus) -> dict[str, Any]:
    return JobAccepted(job_id=job_id, status=status).model_dump(mode="json")


def job_out(job: JobView, caller: Caller) -> dict[str, Any]:
    data = JobOut(
        job_id=job.job_id,
        kind=job.kind,
        status=job.status,
        user_id=job.user_id,
        result=job.result,
        error=JobError.model_validate(job.error) if job.error else None,
        attempts=job.attempts,
        api_key_id=job.api_key_id,
        created_at=job.created_at,
        finished_at=job.finished_at,
    ).model_dump(mode="json")
    if not caller.is_admin:
        data["result"] = strip_spoof_scores(data["result"])
    return data


def user_out(state: UserEnrollmentState) -> dict[str, Any]:
    return UserOut(
        user_id=state.user_id,
        created_at=state.created_at,
        updated_at=state.updated_at,
        enrollments=[
            EnrollmentOut(
                model_version=e.model_version,
                model_name=e.model_name,
                enrollment_id=UUID(e.enrollment_id),
                image_templates=e.image_templates,
                mean_template=e.mean_template,
                n_images=e.n_images,
                liveness_checked=e.liveness_checked,
                created_at=e.created_at,
                active_model_version=e.active_model_version,
            )
            for e in state.enrollments
        ],
    ).model_dump(mode="json")


class LivenessSessionOut(BaseModel):
    """A liveness session's state: decisions and reason codes, never the nonce or scores."""

    session_id: UUID
    status: str = Field(description="open, passed, failed (attempts used up) or consumed")
    expired: bool
    user_id: str | None = None
    channel: str | None = None
    attempts: int
    max_attempts: int
    attempts_left: int
    expires_at: datetime
    created_at: datetime
    decided_at: datetime | None = None
    consumed_at: datetime | None = None
    last_decision: str | None = Field(
        None, description="live, spoof, faces_differ or quality_failed"
    )
    last_reasons: list[str] = Field(default_factory=list, description="reason codes")
    last_job_id: UUID | None = None
    consumed_by_job: UUID | None = Field(None, description="the verification it backed")
    probe_image_key: str | None = Field(None, description="the frame a verification matches")


class NewLivenessSessionOut(LivenessSessionOut):
    """201: the session and its nonce, shown this once: send it with every frame."""

    nonce: str


def session_out(data: dict[str, Any], caller: Caller) -> dict[str, Any]:
    out = LivenessSessionOut.model_validate(data).model_dump(mode="json")
    if "nonce" in data:
        out["nonce"] = data["nonce"]
    return out if caller.is_admin else dict(strip_spoof_scores(out))
