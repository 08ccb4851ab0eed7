"""Batched Postgres look-ups of the backfill: one query for many users or jobs, never one each.

The database is the backfill's source of truth for resuming: which users are
enrolled with the current model, which idempotency keys already have a job and
how those jobs ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from shared.schemas import JobStatus


@dataclass(frozen=True)
class JobState:
    job_id: UUID
    idempotency_key: str | None
    status: JobStatus
    error_code: str | None
    error_message: str | None
    result: dict[str, Any] | None  # only once finished
    created_at: datetime


_FIELDS = (
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


def enrolled_users(
    conn: psycopg.Connection, user_ids: Sequence[str], model_version: str | None
) -> set[str]:
    """Those of ``user_ids`` with an active mean template of ``model_version``."""
    if model_version is None or not user_ids:
        return set()
    rows = conn.execute(
        "SELECT DISTINCT user_id FROM templates WHERE is_active AND is_mean_template"
        " AND model_version = %s AND user_id = ANY(%s)",
        (model_version, list(user_ids)),
    ).fetchall()
    return {str(r[0]) for r in rows}


def erased_users(conn: psycopg.Connection, user_ids: Sequence[str]) -> set[str]:
    """Those of ``user_ids`` erased on request (audited deletion) and not enrolled since."""
    if not user_ids:
        return set()
    rows = conn.execute(
        "SELECT DISTINCT a.user_id FROM audit_log a WHERE a.event = 'user_deleted'"
        " AND a.user_id = ANY(%s)"
        " AND NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = a.user_id)",
        (list(user_ids),),
    ).fetchall()
    return {str(r[0]) for r in rows}


def jobs_by_key(conn: psycopg.Connection, keys: Sequence[str]) -> dict[str, JobState]:
    if not keys:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_FIELDS} FROM jobs WHERE idempotency_key = ANY(%s)", (list(keys),))
        return {row["idempotency_key"]: _state(row) for row in cur.fetchall()}


def job_states(conn: psycopg.Connection, job_ids: Sequence[UUID]) -> dict[UUID, JobState]:
    if not job_ids:
        return {}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {_FIELDS} FROM jobs WHERE job_id = ANY(%s)", (list(job_ids),))
        return {row["job_id"]: _state(row) for row in cur.fetchall()}
