"""The ``jobs`` table: the durable record producers read, and the idempotency guard."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from shared.schemas import JobKind, JobStatus, JobView

_COLUMNS = (
    "job_id, kind, status, idempotency_key, user_id, result, error_code, error_message, attempts"
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
) -> tuple[JobView, bool]:
    """Insert a queued job unless its id or idempotency key exists; return (job, created).

    With a repeated idempotency key the *first* job is returned, so a retried
    submission can never start a second enrollment.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "INSERT INTO jobs"
            " (job_id, kind, status, idempotency_key, user_id, image_refs, payload)"
            " VALUES (%s, %s, 'queued', %s, %s, %s, %s)"
            f" ON CONFLICT DO NOTHING RETURNING {_COLUMNS}",
            (job_id, str(kind), idempotency_key, user_id, Jsonb(image_refs), Jsonb(payload)),
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


def get_job(conn: psycopg.Connection, job_id: UUID) -> JobView | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = %s", (job_id,))
        row = cur.fetchone()
    return _view(row) if row else None


def mark_running(conn: psycopg.Connection, job_id: UUID) -> JobView | None:
    """Move a queued (or redelivered running) job to running; None if it already finished."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"UPDATE jobs SET status = 'running', attempts = attempts + 1,"
            f" started_at = coalesce(started_at, now()), updated_at = now()"
            f" WHERE job_id = %s AND status IN ('queued', 'running') RETURNING {_COLUMNS}",
            (job_id,),
        )
        row = cur.fetchone()
    return _view(row) if row else None


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
        " finished_at = now(), updated_at = now()"
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
