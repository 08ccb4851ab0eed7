"""The webhook outbox: events written with the job's outcome, their delivery attempts.

Events are created by the ``jobs_webhook_outbox`` trigger (schema 0005) in the same
transaction as the job's outcome. Delivery is at least once: a sender claims due
events by moving ``next_attempt_at`` past its delivery time, so an event whose sender
died is simply due again later, with the same ``event_id`` (the ``webhook-id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row


@dataclass(frozen=True)
class WebhookEvent:
    event_id: UUID
    job_id: UUID
    api_key_id: str
    payload: dict[str, Any]
    attempts: int
    callback_url: str | None  # None once the key was revoked or lost its callback


def claim_due(conn: psycopg.Connection, *, claim_s: float, limit: int) -> list[UUID]:
    """Take up to ``limit`` due events for ``claim_s`` seconds (they are due again after)."""
    rows = conn.execute(
        "UPDATE webhook_events SET next_attempt_at = now() + make_interval(secs => %s)"
        " WHERE event_id IN (SELECT event_id FROM webhook_events"
        "  WHERE status = 'pending' AND next_attempt_at <= now()"
        "  ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)"
        " RETURNING event_id",
        (claim_s, limit),
    ).fetchall()
    return [r[0] for r in rows]


def lock_pending(conn: psycopg.Connection, event_id: UUID) -> bool:
    """Lock a pending event for this transaction; False when settled or another sender has it.

    A sender holds the lock while it POSTs, so two deliveries of one event (a message
    redelivered after its worker died, and the reconciler's next claim) never run at once.
    """
    row = conn.execute(
        "SELECT 1 FROM webhook_events WHERE event_id = %s AND status = 'pending'"
        " FOR UPDATE SKIP LOCKED",
        (event_id,),
    ).fetchone()
    return row is not None


def get_event(conn: psycopg.Connection, event_id: UUID) -> WebhookEvent | None:
    """A pending event with its key's current callback URL; None when already settled."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT e.event_id, e.job_id, e.api_key_id, e.payload, e.attempts,"
            " CASE WHEN k.revoked_at IS NULL THEN k.callback_url END AS callback_url"
            " FROM webhook_events e JOIN api_keys k ON k.key_id = e.api_key_id"
            " WHERE e.event_id = %s AND e.status = 'pending'",
            (event_id,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    return WebhookEvent(
        event_id=row["event_id"],
        job_id=row["job_id"],
        api_key_id=row["api_key_id"],
        payload=dict(row["payload"]),
        attempts=int(row["attempts"]),
        callback_url=row["callback_url"],
    )


def record_attempt(
    conn: psycopg.Connection,
    event_id: UUID,
    *,
    status_code: int | None,
    latency_ms: float | None,
    error: str | None,
    delivered: bool,
    retry_in_s: float | None,
) -> None:
    """Log one attempt and settle the event: delivered, due again later, or failed for good."""
    with conn.transaction():
        (attempt,) = conn.execute(
            "UPDATE webhook_events SET attempts = attempts + 1, last_error = %s,"
            " status = CASE WHEN %s THEN 'delivered' WHEN %s::float8 IS NULL THEN 'failed'"
            "  ELSE 'pending' END,"
            " delivered_at = CASE WHEN %s THEN now() END,"
            " next_attempt_at = CASE WHEN %s::float8 IS NULL THEN next_attempt_at"
            "  ELSE now() + make_interval(secs => %s::float8) END"
            " WHERE event_id = %s RETURNING attempts",
            (error, delivered, retry_in_s, delivered, retry_in_s, retry_in_s, event_id),
        ).fetchone() or (0,)
        conn.execute(
            "INSERT INTO webhook_attempts (event_id, attempt, status_code, latency_ms, error)"
            " VALUES (%s, %s, %s, %s, %s)",
            (event_id, attempt, status_code, latency_ms, error),
        )


def replay_job_events(conn: psycopg.Connection, job_id: UUID) -> int:
    """Make a job's events due now again (same event ids); the number of events."""
    cur = conn.execute(
        "UPDATE webhook_events SET status = 'pending', next_attempt_at = now() WHERE job_id = %s",
        (job_id,),
    )
    return cur.rowcount


def attempts_of_job(conn: psycopg.Connection, job_id: UUID) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT e.event_id, e.status, a.attempt, a.at, a.status_code, a.latency_ms, a.error"
            " FROM webhook_events e LEFT JOIN webhook_attempts a USING (event_id)"
            " WHERE e.job_id = %s ORDER BY e.created_at, a.attempt",
            (job_id,),
        )
        return list(cur.fetchall())
