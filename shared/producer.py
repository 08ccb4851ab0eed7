"""Client for services that submit jobs: upload images, enqueue by reference, read results.

Importable without any worker dependency (no models, no ONNX Runtime). The job
row is written to Postgres *before* the message is sent, so ``get_job`` works
at once and an idempotency key is honoured even if the broker is slow.

    client = FaceauthClient()
    job_id = client.submit_enrollment("alice", [jpeg_bytes], idempotency_key="signup-42")
    job = client.wait(job_id, timeout=30)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from celery import Celery

from shared.celery_config import celery_config
from shared.config import Settings, get_settings
from shared.db import jobs as job_repo
from shared.db.pool import get_pool
from shared.errors import ErrorCode
from shared.schemas import (
    REQUEST_FOR_KIND,
    TASK_FOR_KIND,
    JobKind,
    JobStatus,
    JobView,
)
from shared.storage import ImageStore

ImageInput = bytes | str  # raw encoded bytes to upload, or an existing object key

_MAGIC = (
    (b"\xff\xd8\xff", ".jpg", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", ".png", "image/png"),
    (b"RIFF", ".webp", "image/webp"),
    (b"BM", ".bmp", "image/bmp"),
)


def sniff_type(data: bytes) -> tuple[str, str]:
    for magic, ext, mime in _MAGIC:
        if data.startswith(magic):
            return ext, mime
    return ".bin", "application/octet-stream"


class JobTimeout(TimeoutError):
    pass


class FaceauthClient:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.store = ImageStore.from_settings(self.settings)
        self.celery = Celery("faceauth-producer")
        self.celery.conf.update(celery_config(self.settings))

    # --- images -------------------------------------------------------------------------------
    def upload_image(self, data: bytes, *, prefix: str) -> str:
        ext, mime = sniff_type(data)
        key = f"{prefix.strip('/')}/{uuid4().hex}{ext}"
        return self.store.put(key, data, content_type=mime)

    def _image_keys(self, images: Sequence[ImageInput], prefix: str) -> list[str]:
        return [
            img if isinstance(img, str) else self.upload_image(img, prefix=prefix) for img in images
        ]

    @staticmethod
    def _probe_prefix() -> str:
        return "probes/" + datetime.now(UTC).strftime("%Y/%m/%d")

    # --- submission ---------------------------------------------------------------------------
    def submit(
        self, kind: JobKind, payload: dict[str, Any], *, idempotency_key: str | None = None
    ) -> UUID:
        """Record and enqueue a job; with a known idempotency key, return the first job's id."""
        job_id = uuid4()
        body = {**payload, "job_id": str(job_id)}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        request = REQUEST_FOR_KIND[kind].model_validate(body)  # fail fast, before any write
        with get_pool(self.settings).connection() as conn:
            job, created = job_repo.create_job(
                conn,
                job_id=job_id,
                kind=kind,
                idempotency_key=idempotency_key,
                user_id=request.subject_user(),
                image_refs=request.image_refs(),
                payload=request.model_dump(mode="json"),
            )
        if not created:
            return job.job_id
        try:
            self.celery.send_task(
                str(TASK_FOR_KIND[kind]),
                kwargs={"payload": request.model_dump(mode="json", exclude_none=True)},
                task_id=str(job_id),
            )
        except Exception as exc:
            with get_pool(self.settings).connection() as conn:
                job_repo.finish_job(
                    conn,
                    job_id,
                    status=JobStatus.FAILED,
                    result=None,
                    error_code=str(ErrorCode.BROKER_UNAVAILABLE),
                    error_message=f"could not enqueue ({type(exc).__name__})",
                )
            raise
        return job_id

    def submit_inspection(self, image: ImageInput, *, idempotency_key: str | None = None) -> UUID:
        (key,) = self._image_keys([image], self._probe_prefix())
        return self.submit(
            JobKind.INSPECT_IMAGE, {"image_key": key}, idempotency_key=idempotency_key
        )

    def submit_enrollment(
        self,
        user_id: str,
        images: Sequence[ImageInput],
        *,
        idempotency_key: str | None = None,
        liveness: bool = True,
    ) -> UUID:
        keys = self._image_keys(images, f"enroll/{user_id}")
        return self.submit(
            JobKind.ENROLL,
            {"user_id": user_id, "image_keys": keys, "liveness": liveness},
            idempotency_key=idempotency_key,
        )

    def submit_verification(
        self,
        user_id: str,
        image: ImageInput,
        *,
        idempotency_key: str | None = None,
        liveness: bool = True,
    ) -> UUID:
        (key,) = self._image_keys([image], self._probe_prefix())
        return self.submit(
            JobKind.VERIFY,
            {"user_id": user_id, "image_key": key, "liveness": liveness},
            idempotency_key=idempotency_key,
        )

    def submit_identification(
        self,
        image: ImageInput,
        *,
        top_k: int = 5,
        idempotency_key: str | None = None,
        liveness: bool = True,
    ) -> UUID:
        (key,) = self._image_keys([image], self._probe_prefix())
        return self.submit(
            JobKind.IDENTIFY,
            {"image_key": key, "top_k": top_k, "liveness": liveness},
            idempotency_key=idempotency_key,
        )

    def submit_quality_scan(
        self, images: Sequence[ImageInput], *, idempotency_key: str | None = None
    ) -> UUID:
        keys = self._image_keys(images, self._probe_prefix())
        return self.submit(
            JobKind.QUALITY_SCAN, {"image_keys": keys}, idempotency_key=idempotency_key
        )

    def submit_reembed(self, user_id: str, *, idempotency_key: str | None = None) -> UUID:
        return self.submit(JobKind.REEMBED, {"user_id": user_id}, idempotency_key=idempotency_key)

    def submit_calibration(
        self, *, model_version: str | None = None, activate: bool = False
    ) -> UUID:
        return self.submit(
            JobKind.CALIBRATE, {"model_version": model_version, "activate": activate}
        )

    def submit_user_deletion(self, user_id: str, *, idempotency_key: str | None = None) -> UUID:
        return self.submit(
            JobKind.DELETE_USER, {"user_id": user_id}, idempotency_key=idempotency_key
        )

    # --- results ------------------------------------------------------------------------------
    def get_job(self, job_id: UUID) -> JobView | None:
        with get_pool(self.settings).connection() as conn:
            return job_repo.get_job(conn, job_id)

    def wait(self, job_id: UUID, timeout: float = 60.0, *, poll_s: float = 0.05) -> JobView:
        """Poll Postgres (the durable record) until the job finished or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        delay = poll_s
        while True:
            job = self.get_job(job_id)
            if job is not None and job.status.finished:
                return job
            if time.monotonic() >= deadline:
                state = job.status if job else "missing"
                raise JobTimeout(f"job {job_id} not finished after {timeout}s (status {state})")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
