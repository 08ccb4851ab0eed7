"""The one path every job takes: validate, record, run once, store the outcome.

- A malformed payload or bad input ends the job as ``failed`` with a stable code
  and returns normally, so Celery never retries it (no crash loop).
- Storage or database outages are retried with exponential backoff; when the
  retries run out the job fails with ``retries_exhausted``.
- The domain writes of a job and its ``succeeded`` status commit in one
  transaction, after re-checking under a row lock that no other delivery
  finished it first. A redelivered or resubmitted job therefore yields one result.
- A message runs only the job it describes: a row it names with another kind, user
  or payload is refused untouched (``job_conflict``), and a payload that fails
  validation is recorded under the message's own task id, never a row it names.
- A delivery holds the job's lease while it runs and renews it; a duplicate message
  finds the lease held and stops, and a dead worker's lease runs out so that the
  reconciler (shared/delivery.py) publishes the job again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import psycopg
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from pydantic import ValidationError

from shared.db import jobs as job_repo
from shared.errors import ErrorCode, FaceauthError, TransientError
from shared.schemas import JOBS, JobKind, JobRequest, JobStatus, JobView
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


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "payload"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


_NO_PAYLOAD = object()


def call_payload(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The one ``payload`` argument of a task call, or a marker when the call has another shape.

    Tasks accept any arguments so that a message with wrong ones reaches the runner
    (and ends as ``invalid_payload``) instead of dying in a TypeError before it.
    """
    if not args and set(kwargs) == {"payload"}:
        return kwargs["payload"]
    if len(args) == 1 and not kwargs:
        return args[0]
    return _NO_PAYLOAD


def _comparable(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "job_id" and v is not None}


def _same_request(identity: job_repo.JobIdentity, kind: JobKind, request: JobRequest) -> bool:
    """Does this message describe the job row it names (kind, subject and payload)?"""
    return (
        identity.kind == str(kind)
        and identity.user_id == request.subject_user()
        and _comparable(identity.payload) == _comparable(request.model_dump(mode="json"))
    )


def _refused(job_id: UUID | str, reason: str, message: str) -> dict[str, Any]:
    """A message that may not touch the job it names: nothing is written, the row is untouched."""
    log.warning("refused a message for job %s: %s", job_id, message)
    metrics.observe_refused(reason)
    err = FaceauthError(ErrorCode.JOB_CONFLICT, message)
    return {"job_id": str(job_id), "status": "refused", "error": err.to_dict()}


def _task_id(task: Task) -> UUID | None:
    try:
        return UUID(str(task.request.id))
    except ValueError:
        return None


def run_job(
    task: Task,
    kind: JobKind,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    handler: Handler,
) -> dict[str, Any]:
    rt = runtime()
    task_id = _task_id(task)
    if task_id is None:
        # Job ids are UUIDs; a message with another task id cannot name a job row.
        return _refused(str(task.request.id)[:100], "bad_task_id", "task id is not a UUID")
    raw_payload = call_payload(args, kwargs)
    started = time.perf_counter()
    request: JobRequest | None = None
    job_id = task_id
    owner = uuid4()  # this delivery's lease token
    try:
        try:
            if raw_payload is _NO_PAYLOAD:
                raise _BadCall(
                    f"a {kind} task takes one argument, payload (got {len(args)} positional"
                    f" and {sorted(kwargs)[:5]} keyword arguments)"
                )
            request = JOBS[kind].request.model_validate(raw_payload)
        except ValidationError as exc:
            return _fail_unvalidated(rt, kind, task_id, _validation_message(exc))
        except _BadCall as exc:
            return _fail_unvalidated(rt, kind, task_id, str(exc))
        job_id = request.job_id or task_id
        begun = _begin(rt, kind, request, job_id, owner)
        if begun is not None:
            return begun
        ctx = JobContext(job_id=job_id, runtime=rt, attempt=int(task.request.retries) + 1)
        with LeaseKeeper(rt, job_id, owner):
            try:
                outcome = handler(request, ctx)
            except FaceauthError as exc:
                if exc.transient:
                    raise
                outcome = Outcome(result=exc.to_dict(), status=JobStatus.FAILED, error=exc)
            except SoftTimeLimitExceeded:
                err = FaceauthError(ErrorCode.INTERNAL, "job exceeded its time limit")
                outcome = Outcome(result=err.to_dict(), status=JobStatus.FAILED, error=err)
        view = _commit(rt, kind, job_id, outcome, request)
        metrics.observe_job(kind, view.status, view.error, time.perf_counter() - started)
        for stage, seconds in outcome.stage_seconds.items():
            metrics.observe_stage(stage, seconds)
        return view.model_dump(mode="json")
    except (TransientError, psycopg.OperationalError) as exc:
        return _retry_or_fail(task, rt, kind, job_id, request, owner, exc)
    except Exception as exc:
        # A bug must not become a crash loop: fail this job, keep the worker serving.
        # The traceback is logged; payloads and pixels are not.
        log.exception("job %s (%s) crashed: %s", job_id, kind, type(exc).__name__)
        err = FaceauthError(ErrorCode.INTERNAL, f"internal error ({type(exc).__name__})")
        return _record_failure(rt, kind, job_id, request, err, started)


class _BadCall(Exception):
    pass


def _begin(
    rt: WorkerRuntime, kind: JobKind, request: JobRequest, job_id: UUID, owner: UUID
) -> dict[str, Any] | None:
    """Create or claim the job row; a result to return when there is nothing to run."""
    with rt.pool.connection() as conn:
        # The producer wrote the row before the message, so it usually exists: read what it
        # holds first, and create it only for a message that no producer recorded.
        identity = job_repo.job_identity(conn, job_id)
        if identity is None:
            job, created = job_repo.create_job_for(
                conn,
                request,
                job_id=job_id,
                kind=kind,
                queued_timeout_s=rt.settings.job_queued_timeout_s,
            )
            if not created:  # a concurrent delivery, or the key of an earlier job
                identity = job_repo.job_identity(conn, job.job_id)
                if job.job_id != job_id:
                    if identity is None or not _same_request(identity, kind, request):
                        return _refused(
                            job_id,
                            "idempotency_key_reused",
                            f"idempotency key belongs to job {job.job_id}, a different request",
                        )
                    # The same request under the same key: the first job is the answer.
                    return job.model_dump(mode="json")
                if identity is None:
                    return _refused(job_id, "job_mismatch", "the job row vanished meanwhile")
        if identity is not None and not _same_request(identity, kind, request):
            return _refused(
                job_id, "job_mismatch", "the kind, user or payload differ from the job row"
            )
        state, view = job_repo.claim_job(conn, job_id, owner=owner, lease_s=rt.settings.job_lease_s)
    if state is job_repo.ClaimState.CLAIMED:
        return None
    if state is job_repo.ClaimState.BUSY:
        # A duplicate message (e.g. re-published while the first delivery still runs): the
        # delivery holding the lease finishes the job, or the reconciler sees it die.
        log.info("job %s is running under another delivery's lease; this message is done", job_id)
    assert view is not None
    return view.model_dump(mode="json")


def _commit(
    rt: WorkerRuntime,
    kind: JobKind,
    job_id: UUID,
    outcome: Outcome,
    request: JobRequest | None,
) -> JobView:
    with rt.pool.connection() as conn, conn.transaction():
        status = job_repo.lock_status(conn, job_id)
        if status is not None and status.finished:
            view = job_repo.get_job(conn, job_id)
            assert view is not None
            return view
        if status is None:
            # The failure came before the job row existed (e.g. the database was down when
            # the job started): record it anyway so the producer sees an outcome.
            if request is not None:
                job_repo.create_job_for(
                    conn,
                    request,
                    job_id=job_id,
                    kind=kind,
                    queued_timeout_s=rt.settings.job_queued_timeout_s,
                )
            else:
                job_repo.create_job(
                    conn,
                    job_id=job_id,
                    kind=kind,
                    idempotency_key=None,
                    user_id=None,
                    image_refs=[],
                    payload={},
                    queued_timeout_s=rt.settings.job_queued_timeout_s,
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


def _record_failure(
    rt: WorkerRuntime,
    kind: JobKind,
    job_id: UUID,
    request: JobRequest | None,
    err: FaceauthError,
    started: float,
) -> dict[str, Any]:
    outcome = Outcome(result=err.to_dict(), status=JobStatus.FAILED, error=err)
    try:
        view = _commit(rt, kind, job_id, outcome, request)
    except Exception as exc:
        # The database is gone too: the row keeps its lease, which runs out, and the
        # reconciler delivers the job again once the database is back.
        log.error("could not record the failure of job %s: %s", job_id, type(exc).__name__)
        return {"job_id": str(job_id), "status": "failed", "error": err.to_dict()}
    metrics.observe_job(kind, view.status, view.error, time.perf_counter() - started)
    return view.model_dump(mode="json")


def _fail_unvalidated(rt: WorkerRuntime, kind: JobKind, task_id: UUID, why: str) -> dict[str, Any]:
    """Record ``invalid_payload`` under the message's own task id, never a row it names.

    An existing row with that id belongs to somebody else's valid request (or to this
    same bad message, delivered before): it is left as it is.
    """
    err = FaceauthError(ErrorCode.INVALID_PAYLOAD, f"invalid {kind} payload: {why}")
    outcome = Outcome(result=err.to_dict(), status=JobStatus.FAILED, error=err)
    with rt.pool.connection() as conn, conn.transaction():
        job, created = job_repo.create_job(
            conn,
            job_id=task_id,
            kind=kind,
            idempotency_key=None,
            user_id=None,
            image_refs=[],
            # Keep only the shape of a bad payload: it may hold anything.
            payload={"invalid": True},
            queued_timeout_s=rt.settings.job_queued_timeout_s,
        )
        if not created:
            identity = job_repo.job_identity(conn, task_id)
            if identity is not None and identity.payload == {"invalid": True}:
                return job.model_dump(mode="json")  # this bad message, delivered again
            return _refused(task_id, "invalid_payload_for_existing_job", err.message)
        job_repo.finish_job(
            conn,
            task_id,
            status=JobStatus.FAILED,
            result=outcome.result,
            error_code=str(err.code),
            error_message=err.message,
        )
        view = job_repo.get_job(conn, task_id)
    assert view is not None
    metrics.observe_job(kind, view.status, view.error, 0.0)
    return view.model_dump(mode="json")


def _retry_or_fail(
    task: Task,
    rt: WorkerRuntime,
    kind: JobKind,
    job_id: UUID,
    request: JobRequest | None,
    owner: UUID,
    exc: Exception,
) -> dict[str, Any]:
    retries = int(task.request.retries)
    settings = rt.settings
    if retries < settings.task_max_retries:
        # Exponential backoff with full jitter, so workers that saw one outage together do
        # not all come back in the same second; the one-second floor keeps the retries of a
        # short outage from all landing inside it.
        countdown = 1 + get_exponential_backoff_interval(
            factor=1, retries=retries, maximum=settings.task_retry_backoff_max_s, full_jitter=True
        )
        log.warning(
            "job %s (%s): transient fault %s, retry %d/%d in %ss",
            job_id,
            kind,
            type(exc).__name__,
            retries + 1,
            settings.task_max_retries,
            countdown,
        )
        _release_for_retry(rt, job_id, owner, countdown)
        raise task.retry(exc=exc, countdown=countdown, max_retries=settings.task_max_retries)
    err = FaceauthError(
        ErrorCode.RETRIES_EXHAUSTED,
        f"gave up after {retries} retries: {getattr(exc, 'message', type(exc).__name__)}",
    )
    return _record_failure(rt, kind, job_id, request, err, time.perf_counter())


def _release_for_retry(rt: WorkerRuntime, job_id: UUID, owner: UUID, countdown: float) -> None:
    """Let the retry claim the job; if the database is down the lease simply runs out."""
    try:
        with rt.pool.connection(timeout=2) as conn:
            job_repo.release_lease(
                conn,
                job_id,
                owner=owner,
                requeue_in_s=countdown + rt.settings.job_queued_timeout_s,
            )
    except Exception as err:
        log.info("job %s: lease not released before retry (%s)", job_id, type(err).__name__)


class LeaseKeeper:
    """Renews the job's lease every third of it while the handler runs.

    Renewal stops at the task's hard time limit, so a process that outlives it (an
    orphaned pool child) cannot hold a job for ever.
    """

    def __init__(self, rt: WorkerRuntime, job_id: UUID, owner: UUID) -> None:
        self._rt = rt
        self._job_id = job_id
        self._owner = owner
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        settings = self._rt.settings
        every = settings.job_lease_s / 3
        deadline = time.monotonic() + settings.task_time_limit_s
        while not self._done.wait(every) and time.monotonic() < deadline:
            try:
                with self._rt.pool.connection(timeout=every) as conn:
                    held = job_repo.renew_lease(
                        conn, self._job_id, owner=self._owner, lease_s=settings.job_lease_s
                    )
            except Exception as exc:  # database blip: try again next time
                log.warning("job %s: lease not renewed (%s)", self._job_id, type(exc).__name__)
                continue
            if not held:
                log.warning("job %s: lease taken over by another delivery", self._job_id)
                return
