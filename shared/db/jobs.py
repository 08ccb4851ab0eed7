"""The ``jobs`` table: the durable record producers read, and the idempotency guard."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from shared.errors import ErrorCode
from shared.schemas import JobKind, JobRequest, JobStatus, JobView

_COLUMNS = (
    "job_id, kind, status, idempotency_key, user_id, result, error_code, error_message, attempts,"
    " api_key_id, request_fingerprint, created_at, finished_at"
)


def _view(row: dict[str, Any]) -> JobView:
    error = None
    if row["error_code"]:
        error = {"code": row["error_code"], "message": row["error_message"] or ""}
    return JobView(
        job_id=row["job_id"],
        kind=JobKind(row["kind"]),
        status=JobStatus(row["status"]),
        user_id=row["user_id"],
        result=row["result"],
        error=error,
        attempts=row["attempts"],
        api_key_id=row["api_key_id"],
        request_fingerprint=row["request_fingerprint"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


def create_job(
    conn: psycopg.Connection,
    *,
    job_id: UUID,
    kind: JobKind,
    idempotency_key: str | None,
    user_id: str | None,
    image_refs: list[str],
    payload: dict[str, Any],
    queued_timeout_s: float,
    api_key_id: str | None = None,
    request_fingerprint: str | None = None,
) -> tuple[JobView, bool]:
    """Insert a queued job unless its id or idempotency key exists; return (job, created).

    With a repeated idempotency key the *first* job is returned, so a retried
    submission can never start a second enrollment. The row is created as published
    once (its message is sent right after, or is the one being handled) with a lease of
    ``queued_timeout_s``: if no worker has started it by then, the reconciler sends its
    message again.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "INSERT INTO jobs (job_id, kind, status, idempotency_key, user_id, image_refs,"
            " payload, publish_count, last_published_at, lease_expires_at, api_key_id,"
            " request_fingerprint)"
            " VALUES (%s, %s, 'queued', %s, %s, %s, %s, 1, now(),"
            " now() + make_interval(secs => %s), %s, %s)"
            f" ON CONFLICT DO NOTHING RETURNING {_COLUMNS}",
            (
                job_id,
                str(kind),
                idempotency_key,
                user_id,
                Jsonb(image_refs),
                Jsonb(payload),
                queued_timeout_s,
                api_key_id,
                request_fingerprint,
            ),
        )
        row = cur.fetchone()
        if row is not None:
            return _view(row), True
        cur.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE job_id = %s OR"
            " (%s::text IS NOT NULL AND idempotency_key = %s) ORDER BY created_at LIMIT 1",
            (job_id, idempotency_key, idempotency_key),
        )
        existing = cur.fetchone()
    if existing is None:  # lost a race with a concurrent delete; extremely unlikely
        raise RuntimeError(f"job {job_id} vanished during creation")
    return _view(existing), False


def create_job_for(
    conn: psycopg.Connection,
    request: JobRequest,
    *,
    job_id: UUID,
    kind: JobKind,
    queued_timeout_s: float,
    api_key_id: str | None = None,
    request_fingerprint: str | None = None,
) -> tuple[JobView, bool]:
    """``create_job`` with the row's fields taken from a validated request."""
    return create_job(
        conn,
        job_id=job_id,
        kind=kind,
        idempotency_key=request.idempotency_key,
        user_id=request.subject_user(),
        image_refs=request.image_refs(),
        payload=request.model_dump(mode="json"),
        queued_timeout_s=queued_timeout_s,
        api_key_id=api_key_id,
        request_fingerprint=request_fingerprint,
    )


def find_by_idempotency_key(conn: psycopg.Connection, key: str) -> JobView | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM jobs WHERE idempotency_key = %s", (key,))
        row = cur.fetchone()
    return _view(row) if row else None


@dataclass(frozen=True)
class JobIdentity:
    """What a job row says it is: a message may only run the job it describes."""

    kind: str
    user_id: str | None
    payload: dict[str, Any]


def job_identity(conn: psycopg.Connection, job_id: UUID) -> JobIdentity | None:
    row = conn.execute(
        "SELECT kind, user_id, payload FROM jobs WHERE job_id = %s", (job_id,)
    ).fetchone()
    if row is None:
        return None
    return JobIdentity(kind=str(row[0]), user_id=row[1], payload=dict(row[2] or {}))


def get_job(conn: psycopg.Connection, job_id: UUID) -> JobView | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = %s", (job_id,))
        row = cur.fetchone()
    return _view(row) if row else None


def lock_status(conn: psycopg.Connection, job_id: UUID) -> JobStatus | None:
    """The job's status, its row locked until the transaction ends (None: no such row)."""
    row = conn.execute("SELECT status FROM jobs WHERE job_id = %s FOR UPDATE", (job_id,)).fetchone()
    return JobStatus(row[0]) if row is not None else None


class ClaimState(StrEnum):
    CLAIMED = "claimed"  # this delivery now holds the lease and runs the job
    FINISHED = "finished"  # the job already has its outcome
    BUSY = "busy"  # another delivery holds a live lease on it


def claim_job(
    conn: psycopg.Connection, job_id: UUID, *, owner: UUID, lease_s: float
) -> tuple[ClaimState, JobView | None]:
    """Take the job's lease unless it finished or another live delivery holds it.

    A lease that ran out belongs to a delivery whose worker died (or stalled past
    its lease): taking it over is what makes a redelivered job run again.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = %s,"
            " lease_expires_at = now() + make_interval(secs => %s),"
            " started_at = coalesce(started_at, now()), updated_at = now()"
            " WHERE job_id = %s AND (status = 'queued' OR (status = 'running' AND"
            " (lease_expires_at IS NULL OR lease_expires_at < now() OR lease_owner = %s)))"
            f" RETURNING {_COLUMNS}",
            (owner, lease_s, job_id, owner),
        )
        row = cur.fetchone()
    if row is not None:
        return ClaimState.CLAIMED, _view(row)
    view = get_job(conn, job_id)
    if view is None or view.status.finished:
        return ClaimState.FINISHED, view
    return ClaimState.BUSY, view


def renew_lease(conn: psycopg.Connection, job_id: UUID, *, owner: UUID, lease_s: float) -> bool:
    """Extend a running job's lease; False when this delivery no longer holds it."""
    cur = conn.execute(
        "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => %s)"
        " WHERE job_id = %s AND status = 'running' AND lease_owner = %s",
        (lease_s, job_id, owner),
    )
    return cur.rowcount == 1


def release_lease(
    conn: psycopg.Connection, job_id: UUID, *, owner: UUID, requeue_in_s: float
) -> bool:
    """Give the job back to the queue (a retry is scheduled): the next delivery may claim it."""
    cur = conn.execute(
        "UPDATE jobs SET status = 'queued', lease_owner = NULL, updated_at = now(),"
        " lease_expires_at = now() + make_interval(secs => %s)"
        " WHERE job_id = %s AND status = 'running' AND lease_owner = %s",
        (requeue_in_s, job_id, owner),
    )
    return cur.rowcount == 1


def finish_job(
    conn: psycopg.Connection,
    job_id: UUID,
    *,
    status: JobStatus,
    result: dict[str, Any] | None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> bool:
    """Record the outcome once; False when another delivery already finished it."""
    cur = conn.execute(
        "UPDATE jobs SET status = %s, result = %s, error_code = %s, error_message = %s,"
        " finished_at = now(), updated_at = now(), lease_owner = NULL, lease_expires_at = NULL"
        " WHERE job_id = %s AND status IN ('queued', 'running')",
        (
            str(status),
            Jsonb(result) if result is not None else None,
            error_code,
            error_message,
            job_id,
        ),
    )
    return cur.rowcount == 1


# --- reconciliation -------------------------------------------------------------------------
# A job without an outcome whose lease ran out has lost its message (queued) or its worker
# (running). These run inside one transaction of the reconciler; SKIP LOCKED lets several
# reconcilers (one per worker) sweep at once without publishing a job twice in one round.

_STRANDED = "status IN ('queued', 'running') AND lease_expires_at < now()"


@dataclass(frozen=True)
class StrandedJob:
    job_id: UUID
    kind: JobKind
    status: JobStatus
    payload: dict[str, Any]
    publish_count: int


def fail_undeliverable(
    conn: psycopg.Connection, *, max_publishes: int, message: str
) -> list[tuple[UUID, JobKind]]:
    """End stranded jobs that were published ``max_publishes`` times already."""
    code = str(ErrorCode.DELIVERY_ATTEMPTS_EXHAUSTED)
    rows = conn.execute(
        "UPDATE jobs SET status = 'failed', error_code = %s, error_message = %s,"
        " result = jsonb_build_object('code', %s::text, 'message', %s::text),"
        " finished_at = now(), updated_at = now(), lease_owner = NULL, lease_expires_at = NULL"
        " WHERE job_id IN (SELECT job_id FROM jobs WHERE "
        + _STRANDED
        + " AND publish_count >= %s FOR UPDATE SKIP LOCKED) RETURNING job_id, kind",
        (code, message, code, message, max_publishes),
    ).fetchall()
    return [(r[0], JobKind(r[1])) for r in rows]


def lock_stranded(conn: psycopg.Connection, *, max_publishes: int, limit: int) -> list[StrandedJob]:
    """Lock up to ``limit`` stranded jobs that may be published again, oldest lease first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT job_id, kind, status, payload, publish_count FROM jobs WHERE "
            + _STRANDED
            + " AND publish_count < %s ORDER BY lease_expires_at LIMIT %s FOR UPDATE SKIP LOCKED",
            (max_publishes, limit),
        )
        rows = cur.fetchall()
    return [
        StrandedJob(
            job_id=r["job_id"],
            kind=JobKind(r["kind"]),
            status=JobStatus(r["status"]),
            payload=dict(r["payload"] or {}),
            publish_count=int(r["publish_count"]),
        )
        for r in rows
    ]


def mark_republished(conn: psycopg.Connection, job_id: UUID, *, queued_timeout_s: float) -> None:
    """Back to queued with a new message; the next wait is twice as long as the last."""
    conn.execute(
        "UPDATE jobs SET status = 'queued', lease_owner = NULL, updated_at = now(),"
        " publish_count = publish_count + 1, last_published_at = now(),"
        " lease_expires_at = now() + make_interval(secs => %s * power(2, least(publish_count, 10)))"
        " WHERE job_id = %s",
        (queued_timeout_s, job_id),
    )


def counts_by_status(conn: psycopg.Connection, since_s: int) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, count(*) FROM jobs WHERE created_at > now() - make_interval(secs => %s)"
        " GROUP BY status",
        (since_s,),
    ).fetchall()
    return {str(s): int(n) for s, n in rows}


def error_counts(conn: psycopg.Connection, since_s: int) -> dict[str, int]:
    rows = conn.execute(
        "SELECT error_code, count(*) FROM jobs WHERE error_code IS NOT NULL"
        " AND created_at > now() - make_interval(secs => %s) GROUP BY error_code",
        (since_s,),
    ).fetchall()
    return {str(c): int(n) for c, n in rows}


# --- users' jobs ----------------------------------------------------------------------------


def recent_verification_failures(
    conn: psycopg.Connection,
    user_id: str,
    *,
    decisions: Sequence[str],
    window_s: float,
    limit: int,
) -> tuple[int, float]:
    """Failed verifications of ``user_id`` finished in the last ``window_s`` seconds.

    Returns (how many, counted up to ``limit``; seconds until the oldest of those leaves
    the window). A verification "fails" when its result's decision is one of
    ``decisions``. Counted from the durable record, so outcomes that no HTTP caller ever
    waited for count too, whichever producer submitted them. Both numbers come from the
    database clock, so the caller's clock does not matter.
    """
    row = conn.execute(
        "SELECT count(*), coalesce(extract(epoch FROM"
        " min(finished_at) + make_interval(secs => %s) - now()), 0)"
        " FROM (SELECT finished_at FROM jobs WHERE user_id = %s AND kind = %s"
        " AND status = 'succeeded' AND result ->> 'decision' = ANY(%s)"
        " AND finished_at > now() - make_interval(secs => %s)"
        " ORDER BY finished_at DESC LIMIT %s) recent",
        (window_s, user_id, str(JobKind.VERIFY), list(decisions), window_s, limit),
    ).fetchone()
    if row is None:
        return 0, 0.0
    return int(row[0]), max(0.0, float(row[1]))


def image_refs_of_user(conn: psycopg.Connection, user_id: str) -> set[str]:
    """Every image key any job of the user referenced (probes, enrollments, failed ones too)."""
    rows = conn.execute(
        "SELECT DISTINCT jsonb_array_elements_text(image_refs) FROM jobs WHERE user_id = %s",
        (user_id,),
    ).fetchall()
    return {str(r[0]) for r in rows}


def cancel_user_jobs(
    conn: psycopg.Connection, user_id: str, *, except_job: Any, except_kind: JobKind, message: str
) -> list[str]:
    """Fail the user's queued and running jobs (``user_deleted``) but ``except_job`` and
    those of ``except_kind``; returns the ids of the jobs it ended."""
    rows = conn.execute(
        "UPDATE jobs SET status = 'failed', error_code = %s, error_message = %s,"
        " finished_at = now(), updated_at = now()"
        " WHERE user_id = %s AND status IN ('queued', 'running') AND job_id <> %s"
        " AND kind <> %s RETURNING job_id",
        (str(ErrorCode.USER_DELETED), message, user_id, except_job, str(except_kind)),
    ).fetchall()
    return [str(r[0]) for r in rows]


# --- batched look-ups (bulk producers: backfill, re-embedding) ------------------------------
# One query for many jobs, never one each: a bulk producer resumes from these.


@dataclass(frozen=True)
class JobState:
    job_id: UUID
    idempotency_key: str | None
    status: JobStatus
    error_code: str | None
    error_message: str | None
    result: dict[str, Any] | None  # only once finished
    created_at: datetime


_STATE_FIELDS = (
    "job_id, idempotency_key, status, error_code, error_message, created_at,"
    " CASE WHEN status IN ('succeeded', 'failed') THEN result END AS result"
)


def _state(row: dict[str, Any]) -> JobState:
    return JobState(
        job_id=row["job_id"],
        idempotency_key=row["idempotency_key"],
        status=JobStatus(row["status"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        result=row["result"],
        created_at=row["created_at"],
    )


def jobs_by_key(conn: psycopg.Connection, keys: Sequence[str]) -> dict[str, JobState]:
    if not keys:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_STATE_FIELDS} FROM jobs WHERE idempotency_key = ANY(%s)", (list(keys),)
        )
        return {row["idempotency_key"]: _state(row) for row in cur.fetchall()}


def job_states(conn: psycopg.Connection, job_ids: Sequence[UUID]) -> dict[UUID, JobState]:
    if not job_ids:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_STATE_FIELDS} FROM jobs WHERE job_id = ANY(%s)", (list(job_ids),))
        return {row["job_id"]: _state(row) for row in cur.fetchall()}
