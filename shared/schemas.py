"""Job payloads and results: the JSON contract between producers and workers.

Producers that do not install this package send the same JSON with
``celery.send_task(<task name>, kwargs={"payload": {...}})``; see README.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
IMAGE_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/@=+-]{0,511}$"
# A capture channel (mobile, web, kiosk...): the same rule as the CHECK of the
# liveness_calibrations table (0006_liveness_calibrations.sql).
CHANNEL_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"


def _no_dot_segments(key: str) -> str:
    # Keys are S3 object names, not paths, but a ".." segment is never legitimate and
    # would be dangerous wherever a key is ever mapped to a file.
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError("image key must not contain empty, '.' or '..' segments")
    return key


ImageKey = Annotated[str, Field(pattern=IMAGE_KEY_PATTERN), AfterValidator(_no_dot_segments)]


class JobKind(StrEnum):
    INSPECT_IMAGE = "inspect_image"
    ENROLL = "enroll"
    VERIFY = "verify"
    IDENTIFY = "identify"
    QUALITY_SCAN = "quality_scan"
    DELETE_USER = "delete_user"
    REEMBED = "reembed"
    APPLY_RETENTION = "apply_retention"
    CALIBRATE = "calibrate"
    LIVENESS_CHECK = "liveness_check"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


class JobRequest(BaseModel):
    """Fields every job payload may carry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: UUID | None = Field(None, description="defaults to the Celery task id")
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)

    def image_refs(self) -> list[str]:
        return []

    def subject_user(self) -> str | None:
        return None


class InspectImageRequest(JobRequest):
    image_key: ImageKey

    def image_refs(self) -> list[str]:
        return [self.image_key]


class EnrollRequest(JobRequest):
    user_id: str = Field(pattern=USER_ID_PATTERN)
    image_keys: list[ImageKey] = Field(min_length=0, max_length=32)
    liveness: bool = Field(True, description="False only for back-office backfills")
    channel: str | None = Field(
        None,
        pattern=CHANNEL_PATTERN,
        description="capture channel (mobile, web, kiosk...): its active liveness calibration"
        " sets the spoof threshold; default FACEAUTH_LIVENESS_THRESHOLD",
    )

    def image_refs(self) -> list[str]:
        return list(self.image_keys)

    def subject_user(self) -> str | None:
        return self.user_id


class VerifyRequest(JobRequest):
    user_id: str = Field(pattern=USER_ID_PATTERN)
    image_key: ImageKey | None = Field(
        None, description="the probe; may be omitted with liveness_session_id"
    )
    liveness: bool = True
    channel: str | None = Field(
        None,
        pattern=CHANNEL_PATTERN,
        description="capture channel (mobile, web, kiosk...): its active liveness calibration"
        " sets the spoof threshold; default FACEAUTH_LIVENESS_THRESHOLD",
    )
    liveness_session_id: UUID | None = Field(
        None,
        description="a passed liveness session: its recorded frame is the probe (liveness is"
        " not scored again) and the session is used up",
    )

    @model_validator(mode="after")
    def _names_a_probe(self) -> VerifyRequest:
        if self.image_key is None and self.liveness_session_id is None:
            raise ValueError("image_key or liveness_session_id is required")
        return self

    def image_refs(self) -> list[str]:
        return [self.image_key] if self.image_key is not None else []

    def subject_user(self) -> str | None:
        return self.user_id


class IdentifyRequest(JobRequest):
    image_key: ImageKey
    top_k: int | None = Field(None, ge=1, le=100, description="default: FACEAUTH_IDENTIFY_TOP_K")
    liveness: bool = True
    channel: str | None = Field(
        None,
        pattern=CHANNEL_PATTERN,
        description="capture channel (mobile, web, kiosk...): its active liveness calibration"
        " sets the spoof threshold; default FACEAUTH_LIVENESS_THRESHOLD",
    )

    def image_refs(self) -> list[str]:
        return [self.image_key]


class QualityScanRequest(JobRequest):
    image_keys: list[ImageKey] = Field(min_length=1, max_length=256)

    def image_refs(self) -> list[str]:
        return list(self.image_keys)


class ReembedRequest(JobRequest):
    """Re-embed a user's stored source images with the worker's current model version."""

    user_id: str = Field(pattern=USER_ID_PATTERN)

    def subject_user(self) -> str | None:
        return self.user_id


class DeleteUserRequest(JobRequest):
    user_id: str = Field(pattern=USER_ID_PATTERN)

    def subject_user(self) -> str | None:
        return self.user_id


class RetentionRequest(JobRequest):
    """Delete old source images of users who opted out of re-embedding, a page of users a job."""

    older_than_days: float | None = Field(
        None, gt=0, description="default: FACEAUTH_SOURCE_IMAGE_RETENTION_DAYS"
    )
    after_user: str | None = Field(
        None, pattern=USER_ID_PATTERN, description="resume after this user id (paging)"
    )
    max_users: int = Field(500, ge=1, le=10_000)
    dry_run: bool = False


class CalibrateRequest(JobRequest):
    """Calibrate decision thresholds over the enrolled templates of one model version."""

    model_version: str | None = Field(None, max_length=200, description="default: active")
    activate: bool = Field(False, description="make the result the active thresholds")


class LivenessCheckRequest(JobRequest):
    """Frames submitted to a liveness session (workers/pipeline/liveness_session.py)."""

    session_id: UUID
    nonce: str = Field(min_length=16, max_length=128, description="returned at creation")
    image_keys: list[ImageKey] = Field(
        min_length=0, max_length=32, description="1..FACEAUTH_LIVENESS_SESSION_MAX_FRAMES"
    )
    user_id: str | None = Field(
        None,
        pattern=USER_ID_PATTERN,
        description="the session's user, which it must equal (the producer client fills it"
        " in): the job is then the user's, for erasure and cool-downs",
    )

    def image_refs(self) -> list[str]:
        return list(self.image_keys)

    def subject_user(self) -> str | None:
        return self.user_id


class LivenessSessionCreate(BaseModel):
    """What a client may choose when it creates a liveness session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: str | None = Field(
        None, pattern=USER_ID_PATTERN, description="the user the session is for (recommended)"
    )
    channel: str | None = Field(
        None,
        pattern=CHANNEL_PATTERN,
        description="capture channel (mobile, web, kiosk...): its liveness threshold decides",
    )
    ttl_s: float | None = Field(
        None, gt=0, description="shorter lifetime than FACEAUTH_LIVENESS_SESSION_TTL_S"
    )
    max_attempts: int | None = Field(
        None, ge=1, description="fewer attempts than FACEAUTH_LIVENESS_SESSION_MAX_ATTEMPTS"
    )


class QueueRole(StrEnum):
    """Which queue a job kind runs on (the names come from FACEAUTH_QUEUE_*)."""

    INFERENCE = "inference"  # model work: GPU workers
    IO = "io"  # storage and bookkeeping: CPU workers


@dataclass(frozen=True)
class JobSpec:
    """Everything about one job kind, declared once: routing, the producer look-ups, the
    workers' task registration and the README's task table all derive from ``JOBS``.
    Workers bind the handler to the kind once, in ``workers/tasks.py``."""

    kind: JobKind
    request: type[JobRequest]
    queue: QueueRole
    summary: str

    @property
    def task_name(self) -> str:
        """The stable Celery task name other services ``send_task`` by."""
        return f"faceauth.{self.kind}"


JOBS: Mapping[JobKind, JobSpec] = {
    spec.kind: spec
    for spec in (
        JobSpec(JobKind.INSPECT_IMAGE, InspectImageRequest, QueueRole.INFERENCE,
                "decode one stored image and count its faces (a deployment smoke test)"),
        JobSpec(JobKind.ENROLL, EnrollRequest, QueueRole.INFERENCE,
                "quality-gate, embed and store 1-3 photos of one user"),
        JobSpec(JobKind.VERIFY, VerifyRequest, QueueRole.INFERENCE,
                "1:1 verification of a probe against a user's templates"),
        JobSpec(JobKind.IDENTIFY, IdentifyRequest, QueueRole.INFERENCE,
                "1:N search of a probe over the HNSW index"),
        JobSpec(JobKind.QUALITY_SCAN, QualityScanRequest, QueueRole.INFERENCE,
                "every quality metric of stored images, without enrolling"),
        JobSpec(JobKind.REEMBED, ReembedRequest, QueueRole.INFERENCE,
                "re-embed a user's stored images with the worker's model version"),
        JobSpec(JobKind.DELETE_USER, DeleteUserRequest, QueueRole.IO,
                "right to erasure: templates, images, pending jobs"),
        JobSpec(JobKind.APPLY_RETENTION, RetentionRequest, QueueRole.IO,
                "delete old source images of users who opted out of re-embedding"),
        JobSpec(JobKind.CALIBRATE, CalibrateRequest, QueueRole.IO,
                "decision thresholds from the enrolled templates of one model version"),
        JobSpec(JobKind.LIVENESS_CHECK, LivenessCheckRequest, QueueRole.INFERENCE,
                "1-N frames of a liveness session: same face, median spoof score decides"),
    )
}  # fmt: skip
if set(JOBS) != set(JobKind):  # a kind without a spec would have no route and no task
    raise RuntimeError(f"job kinds without a JobSpec: {set(JobKind) - set(JOBS)}")

SPEC_FOR_TASK: Mapping[str, JobSpec] = {spec.task_name: spec for spec in JOBS.values()}

# Tasks that are not jobs (no job row, no outcome of their own): the durable record is
# elsewhere. Webhook delivery keeps its state in the webhook outbox (shared/db/webhooks.py).
WEBHOOK_TASK = "faceauth.deliver_webhook"
INTERNAL_TASKS: Mapping[str, QueueRole] = {WEBHOOK_TASK: QueueRole.IO}


class JobView(BaseModel):
    """What a producer reads back: the durable job record."""

    job_id: UUID
    kind: JobKind
    status: JobStatus
    user_id: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    api_key_id: str | None = None  # the gateway key that submitted it (never the secret)
    request_fingerprint: str | None = None  # what its idempotency key stands for
    created_at: datetime | None = None
    finished_at: datetime | None = None
