"""Job payloads and results: the JSON contract between producers and workers.

Producers that do not install this package send the same JSON with
``celery.send_task(<task name>, kwargs={"payload": {...}})``; see README.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
IMAGE_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/@=+-]{0,511}$"


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


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


class TaskName(StrEnum):
    """Stable task names: other services ``send_task`` by these strings."""

    INSPECT_IMAGE = "faceauth.inspect_image"
    ENROLL = "faceauth.enroll"
    VERIFY = "faceauth.verify"
    IDENTIFY = "faceauth.identify"
    QUALITY_SCAN = "faceauth.quality_scan"
    DELETE_USER = "faceauth.delete_user"
    REEMBED = "faceauth.reembed"
    APPLY_RETENTION = "faceauth.apply_retention"
    CALIBRATE = "faceauth.calibrate"


TASK_FOR_KIND: dict[JobKind, TaskName] = {
    JobKind.INSPECT_IMAGE: TaskName.INSPECT_IMAGE,
    JobKind.ENROLL: TaskName.ENROLL,
    JobKind.VERIFY: TaskName.VERIFY,
    JobKind.IDENTIFY: TaskName.IDENTIFY,
    JobKind.QUALITY_SCAN: TaskName.QUALITY_SCAN,
    JobKind.DELETE_USER: TaskName.DELETE_USER,
    JobKind.REEMBED: TaskName.REEMBED,
    JobKind.APPLY_RETENTION: TaskName.APPLY_RETENTION,
    JobKind.CALIBRATE: TaskName.CALIBRATE,
}


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

    def image_refs(self) -> list[str]:
        return list(self.image_keys)

    def subject_user(self) -> str | None:
        return self.user_id


class VerifyRequest(JobRequest):
    user_id: str = Field(pattern=USER_ID_PATTERN)
    image_key: ImageKey
    liveness: bool = True

    def image_refs(self) -> list[str]:
        return [self.image_key]

    def subject_user(self) -> str | None:
        return self.user_id


class IdentifyRequest(JobRequest):
    image_key: ImageKey
    top_k: int = Field(5, ge=1, le=100)
    liveness: bool = True

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


REQUEST_FOR_KIND: dict[JobKind, type[JobRequest]] = {
    JobKind.INSPECT_IMAGE: InspectImageRequest,
    JobKind.ENROLL: EnrollRequest,
    JobKind.VERIFY: VerifyRequest,
    JobKind.IDENTIFY: IdentifyRequest,
    JobKind.QUALITY_SCAN: QualityScanRequest,
    JobKind.DELETE_USER: DeleteUserRequest,
    JobKind.REEMBED: ReembedRequest,
    JobKind.APPLY_RETENTION: RetentionRequest,
    JobKind.CALIBRATE: CalibrateRequest,
}


class JobView(BaseModel):
    """What a producer reads back: the durable job record."""

    job_id: UUID
    kind: JobKind
    status: JobStatus
    user_id: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    attempts: int = 0
