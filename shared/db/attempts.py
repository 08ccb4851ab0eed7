"""The ``attempt_counters`` table: consecutive failed decisions per user and cool-downs.

A failure is a decision about the person (a suspected presentation attack, frames of two
people, a probe that does not match); ``record_failure`` counts it and, at the limit,
starts a cool-down and resets the count, so the user gets the full number of tries again
after it. A success resets the count. Every time comes from the database clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg


@dataclass(frozen=True)
class FailureCount:
    consecutive_failures: int  # after this failure (0 when it started a cool-down)
    cooldown_started: bool
    cooldown_until: datetime | None


def cooldown_remaining(conn: psycopg.Connection, user_id: str) -> float | None:
    """Seconds left of the user's cool-down; None when there is none now."""
    row = conn.execute(
        "SELECT extract(epoch FROM cooldown_until - now()) FROM attempt_counters"
        " WHERE user_id = %s AND cooldown_until > now()",
        (user_id,),
    ).fetchone()
    return None if row is None else max(0.0, float(row[0]))


def record_failure(
    conn: psycopg.Connection, user_id: str, *, max_failures: int, cooldown_s: float
) -> FailureCount:
    """Count one failure (in the caller's transaction: the row stays locked until commit,
    so concurrent failures are counted one after the other)."""
    row = conn.execute(
        "INSERT INTO attempt_counters AS c (user_id, consecutive_failures, last_failure_at)"
        " VALUES (%(user)s, 1, now())"
        " ON CONFLICT (user_id) DO UPDATE SET"
        " consecutive_failures = c.consecutive_failures + 1, last_failure_at = now(),"
        " updated_at = now()"
        " RETURNING consecutive_failures",
        {"user": user_id},
    ).fetchone()
    assert row is not None
    count = int(row[0])
    if count < max_failures:
        return FailureCount(count, False, None)
    started = conn.execute(
        "UPDATE attempt_counters SET consecutive_failures = 0,"
        " cooldown_until = now() + make_interval(secs => %s), updated_at = now()"
        " WHERE user_id = %s RETURNING cooldown_until",
        (cooldown_s, user_id),
    ).fetchone()
    assert started is not None
    return FailureCount(0, True, started[0])


def record_success(conn: psycopg.Connection, user_id: str) -> None:
    conn.execute(
        "UPDATE attempt_counters SET consecutive_failures = 0, updated_at = now()"
        " WHERE user_id = %s AND consecutive_failures > 0",
        (user_id,),
    )


def delete_user_counter(conn: psycopg.Connection, user_id: str) -> int:
    cur = conn.execute("DELETE FROM attempt_counters WHERE user_id = %s", (user_id,))
    return cur.rowcount
