"""The one path every job takes: validate, record, run once, store the outcome.

- A malformed payload or bad input ends the job as ``failed`` with a stable code
  and returns normally, so Celery never retries it (no crash loop).
- Storage or database outages are retried with exponential backoff; when the
  retries run out the job fails with ``retries_exhausted``.
- The domain writes of a job and its ``succeeded`` status commit in one
  transaction, after re-checking under a row lock that no other delivery
  finished it first. A redelivered or resubmitted job therefore yields one result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError

from shared.db import jobs as job_repo
from shared.errors import ErrorCode, FaceauthError, TransientError
from shared.schemas import REQUEST_FOR_KIND, JobKind, JobRequest, JobStatus, JobView
from workers import metrics
from workers.runtime import WorkerRuntime, runtime

log = logging.getLogger(__name__)

Writer = Callable[[psycopg.Connection], None]


@dataclass
class Outcome:
    """What a handler computed; ``write`` runs in the same transaction as the job's status."""

    result: dict[str, Any]
    write: Writer | None = None
    status: JobStatus = JobStatus.SUCCEEDED
    error: FaceauthError | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class JobContext:
    job_id: UUID
    runtime: WorkerRuntime
    attempt: int


Handler = Callable[[Any, JobContext], Outcome]


def _payload_job_id(raw: Any, fallback: UUID) -> UUID:
    if isinstance(raw, dict) and raw.get("job_id"):
        try:
            return UUID(str(raw["job_id"]))
        except ValueError:
            pass
    return fallback


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "payload"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def run_job(task: Task, kind: JobKind, raw_payload: Any, handler: Handler) -> dict[str, Any]:
    rt = runtime()
    task_id = UUID(str(task.request.id))
    started = time.perf_counter()
    try:
        try:
            request = REQUEST_FOR_KIND[kind].model_validate(raw_payload)
        except ValidationError as exc:
            return _fail_unvalidated(rt, kind, raw_payload, task_id, exc)
        job_id = request.job_id or task_id
        existing = _begin(rt, kind, request, job_id)
        if existing is not None:
            return existing.model_dump(mode="json")
        ctx = JobContext(job_id=job_id, runtime=rt, attempt=int(task.request.retries) + 1)
        try:
            outcome = handler(request, ctx)
        except FaceauthError as exc:
            if exc.transient:
                raise
            outcome = Outcome(result=exc.to_dict(), status=JobStatus.FAILED, error=exc)
        except SoftTimeLimitExceeded:
            err = FaceauthError(ErrorCode.INTERNAL, "job exceeded its time limit")
            outcome = Outcome(result=err.to_dict(), status=JobStatus.FAILED, error=err)
        view = _commit(rt, kind, job_id, outcome)
        metrics.observe_job(kind, view.status, view.error, time.perf_counter() - started)
        for stage, seconds in outcome.stage_seconds.items():
            metrics.observe_stage(stage, seconds)
        return view.model_dump(mode="json")
    except (TransientError, psycopg.OperationalError, psycopg.errors.AdminShutdown) as exc:
        return _retry_or_fail(task, rt, kind, raw_payload, task_id, exc)
    except Exception as exc:
        # A bug must not become a crash loop: fail this job, keep the worker serving.
        # The traceback is logged; payloads and pixels are not.
        log.exception("job %s (%s) crashed: %s", task_id, kind, type(exc).__name__)
        err = FaceauthError(ErrorCode.INTERNAL, f"internal error ({type(exc).__name__})")
        job_id = _payload_job_id(raw_payload, task_id)
        try:
            view = _commit(
                rt, kind, job_id, Outcome(result=err.to_dict(), status=JobStatus.FAILED, error=err)
            )
            metrics.observe_job(kind, view.status, view.error, time.perf_counter() - started)
            return view.model_dump(mode="json")
        except Exception:
            log.exception("could not record failure of job %s", job_id)
            return {"job_id": str(job_id), "status": "failed", "error": err.to_dict()}


def _begin(rt: WorkerRuntime, kind: JobKind, request: JobRequest, job_id: UUID) -> JobView | None:
    """Create/claim the job row; return a view when there is nothing left to do."""
    with rt.pool.connection() as conn:
        job, _created = job_repo.create_job(
            conn,
            job_id=job_id,
            kind=kind,
            idempotency_key=request.idempotency_key,
            user_id=request.subject_user(),
            image_refs=request.image_refs(),
            payload=request.model_dump(mode="json"),
        )
        if job.job_id != job_id or job.status.finished:
            # Same idempotency key as an earlier job, or a redelivery of a finished one.
            return job
        running = job_repo.mark_running(conn, job_id)
        if running is None:
            return job_repo.get_job(conn, job_id)
    return None


def _commit(rt: WorkerRuntime, kind: JobKind, job_id: UUID, outcome: Outcome) -> JobView:
    with rt.pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "SELECT status FROM jobs WHERE job_id = %s FOR UPDATE", (job_id,)
        ).fetchone()
        if row is not None and JobStatus(row[0]).finished:
            view = job_repo.get_job(conn, job_id)
            assert view is not None
            return view
        if row is None:
            # The failure came before the job row existed (e.g. the database was down when
            # the job started): record it anyway so the producer sees an outcome.
            conn.execute(
                "INSERT INTO jobs (job_id, kind, status) VALUES (%s, %s, 'running')",
                (job_id, str(kind)),
            )
        if outcome.status is JobStatus.SUCCEEDED and outcome.write is not None:
            outcome.write(conn)
        job_repo.finish_job(
            conn,
            job_id,
            status=outcome.status,
            result=outcome.result,
            error_code=str(outcome.error.code) if outcome.error else None,
            error_message=outcome.error.message if outcome.error else None,
        )
        view = job_repo.get_job(conn, job_id)
    assert view is not None
    return view


def _fail_unvalidated(
    rt: WorkerRuntime, kind: JobKind, raw: Any, task_id: UUID, exc: ValidationError
) -> dict[str, Any]:
    err = FaceauthError(
        ErrorCode.INVALID_PAYLOAD, f"invalid {kind} payload: {_validation_message(exc)}"
    )
    job_id = _payload_job_id(raw, task_id)
    with rt.pool.connection() as conn:
        # Keep only the shape of a bad payload: it may hold anything.
        job_repo.create_job(
            conn,
            job_id=job_id,
            kind=kind,
            idempotency_key=None,
            user_id=None,
            image_refs=[],
            payload={"invalid": True, "type": type(raw).__name__},
        )
    view = _commit(
        rt, kind, job_id, Outcome(result=err.to_dict(), status=JobStatus.FAILED, error=err)
    )
    metrics.observe_job(kind, view.status, view.error, 0.0)
    return view.model_dump(mode="json")


def _retry_or_fail(
    task: Task, rt: WorkerRuntime, kind: JobKind, raw: Any, task_id: UUID, exc: Exception
) -> dict[str, Any]:
    retries = int(task.request.retries)
    settings = rt.settings
    if retries < settings.task_max_retries:
        countdown = min(2**retries, settings.task_retry_backoff_max_s)
        log.warning(
            "job %s (%s): transient fault %s, retry %d/%d in %ss",
            task_id,
            kind,
            type(exc).__name__,
            retries + 1,
            settings.task_max_retries,
            countdown,
        )
        raise task.retry(exc=exc, countdown=countdown, max_retries=settings.task_max_retries)
    err = FaceauthError(
        ErrorCode.RETRIES_EXHAUSTED,
        f"gave up after {retries} retries: {getattr(exc, 'message', type(exc).__name__)}",
    )
    job_id = _payload_job_id(raw, task_id)
    view = _commit(
        rt, kind, job_id, Outcome(result=err.to_dict(), status=JobStatus.FAILED, error=err)
    )
    metrics.observe_job(kind, view.status, view.error, 0.0)
    return view.model_dump(mode="json")
