"""Client for services that submit jobs: upload images, enqueue by reference, read results.

Importable without any worker dependency (no models, no ONNX Runtime). The job
row is written to Postgres *before* the message is sent, so ``get_job`` works
at once and an idempotency key is honoured even if the broker is slow.

    client = FaceauthClient()
    job_id = client.submit_enrollment("alice", [jpeg_bytes], idempotency_key="signup-42")
    job = client.wait(job_id, timeout=30)
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from celery import Celery

from shared.celery_config import celery_config
from shared.config import Settings, get_settings
from shared.db import jobs as job_repo
from shared.db import liveness_sessions as session_repo
from shared.db.liveness_sessions import LivenessSession
from shared.db.pool import get_pool
from shared.delivery import celery_publisher
from shared.errors import ErrorCode, FaceauthError
from shared.schemas import (
    JOBS,
    JobKind,
    JobStatus,
    JobView,
    LivenessSessionCreate,
)
from shared.storage import ImageStore, user_image_prefix

log = logging.getLogger(__name__)

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


class IdempotencyKeyReused(FaceauthError):
    """The idempotency key names an earlier job whose request was different."""

    def __init__(self, job_id: UUID) -> None:
        super().__init__(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this idempotency key was used for a different request",
            job_id=str(job_id),
        )


@dataclass(frozen=True)
class Origin:
    """Who submits (a gateway API key id, never its secret) and what the request was.

    ``fingerprint`` (a hash of the request, images included) makes an idempotency key
    stand for one request: the same key with another fingerprint is refused.
    """

    api_key_id: str | None = None
    fingerprint: str | None = None


NO_ORIGIN = Origin()


@dataclass(frozen=True)
class NewLivenessSession:
    """A created liveness session and its nonce, which is shown here once and never again."""

    session: LivenessSession
    nonce: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.session.public(), "nonce": self.nonce}


class FaceauthClient:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.store = ImageStore.from_settings(self.settings)
        self.celery = Celery("faceauth-producer")
        self.celery.conf.update(celery_config(self.settings))
        self._publish = celery_publisher(self.celery)

    # --- images -------------------------------------------------------------------------------
    def upload_image(self, data: bytes, *, prefix: str) -> str:
        ext, mime = sniff_type(data)
        key = f"{prefix.strip('/')}/{uuid4().hex}{ext}"
        return self.store.put(key, data, content_type=mime)

    @staticmethod
    def _probe_prefix() -> str:
        return "probes/" + datetime.now(UTC).strftime("%Y/%m/%d")

    def _submit_images(
        self,
        kind: JobKind,
        images: Sequence[ImageInput],
        prefix: str,
        payload: Callable[[list[str]], dict[str, Any]],
        idempotency_key: str | None,
        origin: Origin = NO_ORIGIN,
    ) -> UUID:
        """Upload what is not a key yet, then submit; no upload outlives a job that lost.

        A known idempotency key is answered before anything is uploaded. Two producers
        racing with one new key both upload; the one whose row was not created removes
        its objects again, so the bucket holds no image without a job.
        """
        if idempotency_key is not None:
            existing = self.find_job(idempotency_key)
            if existing is not None:
                return _same_request(existing, origin).job_id
        uploaded: list[str] = []
        keys: list[str] = []
        created = False
        try:
            for image in images:
                if isinstance(image, str):
                    keys.append(image)
                else:
                    key = self.upload_image(image, prefix=prefix)
                    uploaded.append(key)
                    keys.append(key)
            job_id, created = self._submit(
                kind, payload(keys), idempotency_key=idempotency_key, origin=origin
            )
        finally:
            if not created:
                self._remove_uploads(uploaded)
        return job_id

    def _remove_uploads(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self.store.delete(key)
            except Exception as exc:  # best effort: the original error is the one to report
                log.warning("could not remove upload %s: %s", key, type(exc).__name__)

    # --- submission ---------------------------------------------------------------------------
    def submit(
        self,
        kind: JobKind,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        origin: Origin = NO_ORIGIN,
    ) -> UUID:
        """Record and enqueue a job; with a known idempotency key, return the first job's id."""
        job_id, _created = self._submit(
            kind, payload, idempotency_key=idempotency_key, origin=origin
        )
        return job_id

    def _submit(
        self,
        kind: JobKind,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None,
        origin: Origin = NO_ORIGIN,
    ) -> tuple[UUID, bool]:
        job_id = uuid4()
        body = {**payload, "job_id": str(job_id)}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        request = JOBS[kind].request.model_validate(body)  # fail fast, before any write
        with get_pool(self.settings).connection() as conn:
            job, created = job_repo.create_job_for(
                conn,
                request,
                job_id=job_id,
                kind=kind,
                queued_timeout_s=self.settings.job_queued_timeout_s,
                api_key_id=origin.api_key_id,
                request_fingerprint=origin.fingerprint,
            )
        if not created:
            return _same_request(job, origin).job_id, False
        try:
            self._publish(kind, job_id, request.model_dump(mode="json"))
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
        return job_id, True

    def submit_inspection(
        self,
        image: ImageInput,
        *,
        idempotency_key: str | None = None,
        origin: Origin = NO_ORIGIN,
    ) -> UUID:
        return self._submit_images(
            JobKind.INSPECT_IMAGE,
            [image],
            self._probe_prefix(),
            lambda keys: {"image_key": keys[0]},
            idempotency_key,
            origin,
        )

    def submit_enrollment(
        self,
        user_id: str,
        images: Sequence[ImageInput],
        *,
        idempotency_key: str | None = None,
        liveness: bool = True,
        channel: str | None = None,
        origin: Origin = NO_ORIGIN,
    ) -> UUID:
        return self._submit_images(
            JobKind.ENROLL,
            images,
            user_image_prefix(user_id),
            lambda keys: (
                {"user_id": user_id, "image_keys": keys, "liveness": liveness} | _channel(channel)
            ),
            idempotency_key,
            origin,
        )

    def submit_verification(
        self,
        user_id: str,
        image: ImageInput | None = None,
        *,
        idempotency_key: str | None = None,
        liveness: bool = True,
        liveness_session_id: UUID | None = None,
        channel: str | None = None,
        origin: Origin = NO_ORIGIN,
    ) -> UUID:
        """Verify ``image`` against ``user_id``; with a passed ``liveness_session_id`` the
        image may be omitted: the session's recorded frame is the probe."""

        def payload(keys: list[str]) -> dict[str, Any]:
            out: dict[str, Any] = {"user_id": user_id, "liveness": liveness}
            out |= _channel(channel)
            if keys:
                out["image_key"] = keys[0]
            if liveness_session_id is not None:
                out["liveness_session_id"] = str(liveness_session_id)
            return out

        return self._submit_images(
            JobKind.VERIFY,
            [] if image is None else [image],
            self._probe_prefix(),
            payload,
            idempotency_key,
            origin,
        )

    # --- liveness sessions ----------------------------------------------------------------
    def create_liveness_session(
        self,
        *,
        user_id: str | None = None,
        channel: str | None = None,
        ttl_s: float | None = None,
        max_attempts: int | None = None,
        origin: Origin = NO_ORIGIN,
    ) -> NewLivenessSession:
        """Create a session (a row in Postgres, synchronously: no job). ``ttl_s`` and
        ``max_attempts`` may only tighten the configured ones."""
        spec = LivenessSessionCreate(
            user_id=user_id, channel=channel, ttl_s=ttl_s, max_attempts=max_attempts
        )
        nonce = secrets.token_urlsafe(32)  # 256 bits
        with get_pool(self.settings).connection() as conn:
            session = session_repo.create_session(
                conn,
                session_id=uuid4(),
                nonce=nonce,
                user_id=spec.user_id,
                channel=spec.channel,
                ttl_s=min(spec.ttl_s or math.inf, self.settings.liveness_session_ttl_s),
                max_attempts=min(
                    spec.max_attempts or self.settings.liveness_session_max_attempts,
                    self.settings.liveness_session_max_attempts,
                ),
                api_key_id=origin.api_key_id,
            )
        return NewLivenessSession(session, nonce)

    def get_liveness_session(self, session_id: UUID) -> LivenessSession | None:
        with get_pool(self.settings).connection() as conn:
            return session_repo.get_session(conn, session_id)

    def submit_liveness_check(
        self,
        session_id: UUID,
        nonce: str,
        frames: Sequence[ImageInput],
        *,
        idempotency_key: str | None = None,
        origin: Origin = NO_ORIGIN,
    ) -> UUID:
        """Submit 1..FACEAUTH_LIVENESS_SESSION_MAX_FRAMES frames to a session.

        The session is read first: an unknown one is refused before anything is uploaded
        (``session_not_found``), and the job carries the session's user, so the frames
        are stored under the user's prefix and erased with the user.
        """
        session = self.get_liveness_session(session_id)
        if session is None:
            raise FaceauthError(ErrorCode.SESSION_NOT_FOUND, "no such liveness session")
        prefix = (
            user_image_prefix(session.user_id) + "liveness"
            if session.user_id is not None
            else "liveness/" + datetime.now(UTC).strftime("%Y/%m/%d")
        )
        return self._submit_images(
            JobKind.LIVENESS_CHECK,
            frames,
            prefix,
            lambda keys: {
                "session_id": str(session_id),
                "nonce": nonce,
                "image_keys": keys,
                "user_id": session.user_id,
            },
            idempotency_key,
            origin,
        )

    def submit_identification(
        self,
        image: ImageInput,
        *,
        top_k: int | None = None,
        idempotency_key: str | None = None,
        liveness: bool = True,
        channel: str | None = None,
        origin: Origin = NO_ORIGIN,
    ) -> UUID:
        return self._submit_images(
            JobKind.IDENTIFY,
            [image],
            self._probe_prefix(),
            lambda keys: (
                {"image_key": keys[0], "liveness": liveness}
                | ({} if top_k is None else {"top_k": top_k})
                | _channel(channel)
            ),
            idempotency_key,
            origin,
        )

    def submit_quality_scan(
        self,
        images: Sequence[ImageInput],
        *,
        idempotency_key: str | None = None,
        origin: Origin = NO_ORIGIN,
    ) -> UUID:
        return self._submit_images(
            JobKind.QUALITY_SCAN,
            images,
            self._probe_prefix(),
            lambda keys: {"image_keys": keys},
            idempotency_key,
            origin,
        )

    def submit_reembed(self, user_id: str, *, idempotency_key: str | None = None) -> UUID:
        return self.submit(JobKind.REEMBED, {"user_id": user_id}, idempotency_key=idempotency_key)

    def submit_calibration(
        self, *, model_version: str | None = None, activate: bool = False
    ) -> UUID:
        return self.submit(
            JobKind.CALIBRATE, {"model_version": model_version, "activate": activate}
        )

    def submit_user_deletion(
        self,
        user_id: str,
        *,
        idempotency_key: str | None = None,
        origin: Origin = NO_ORIGIN,
    ) -> UUID:
        return self.submit(
            JobKind.DELETE_USER,
            {"user_id": user_id},
            idempotency_key=idempotency_key,
            origin=origin,
        )

    # --- results ------------------------------------------------------------------------------
    def get_job(self, job_id: UUID) -> JobView | None:
        with get_pool(self.settings).connection() as conn:
            return job_repo.get_job(conn, job_id)

    def find_job(self, idempotency_key: str) -> JobView | None:
        """The job submitted under ``idempotency_key``, if any."""
        with get_pool(self.settings).connection() as conn:
            return job_repo.find_by_idempotency_key(conn, idempotency_key)

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


def _same_request(job: JobView, origin: Origin) -> JobView:
    """The earlier job of an idempotency key, if this submission is the same request."""
    if origin.fingerprint is not None and job.request_fingerprint != origin.fingerprint:
        raise IdempotencyKeyReused(job.job_id)
    return job


def _channel(channel: str | None) -> dict[str, str]:
    """The ``channel`` field only when one is named: payloads without it stay as they were."""
    return {} if channel is None else {"channel": channel}
