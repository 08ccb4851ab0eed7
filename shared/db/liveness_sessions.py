"""The ``liveness_sessions`` table: server-issued sessions of a step-up liveness check.

A session is created with a random nonce (returned once, stored as its SHA-256), an
expiry and a cap on attempts. Each decided ``liveness_check`` job is one attempt; the
attempt is recorded atomically against the session's state (open, not expired, attempts
left), so two concurrent submissions can never both use the last attempt. A passed
session backs at most one verification: ``consume`` flips it in the verification's own
transaction. Expiry is judged by the database clock, never a process's.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


class SessionStatus(StrEnum):
    OPEN = "open"  # takes frames
    PASSED = "passed"  # proven live; may back one verification
    FAILED = "failed"  # its attempts ran out without a pass
    CONSUMED = "consumed"  # a verification used it


@dataclass(frozen=True)
class LivenessSession:
    session_id: UUID
    status: SessionStatus
    user_id: str | None
    channel: str | None
    attempts: int
    max_attempts: int
    expires_at: datetime
    created_at: datetime
    expired: bool  # by the database clock, when read
    probe_image_key: str | None = None
    frame_keys: list[str] = field(default_factory=list)
    last_decision: str | None = None
    last_reasons: list[str] = field(default_factory=list)
    last_job_id: UUID | None = None
    consumed_by_job: UUID | None = None
    api_key_id: str | None = None
    decided_at: datetime | None = None
    consumed_at: datetime | None = None
    nonce_sha256: bytes = field(default=b"", repr=False)

    @property
    def attempts_left(self) -> int:
        return max(0, self.max_attempts - self.attempts)

    def nonce_matches(self, nonce: str) -> bool:
        """Constant-time comparison of ``nonce`` with the stored hash."""
        return hmac.compare_digest(nonce_digest(nonce), self.nonce_sha256)

    def public(self) -> dict[str, Any]:
        """What a client may read: state and reason codes, never the nonce or raw scores."""
        return {
            "session_id": str(self.session_id),
            "status": str(self.status),
            "expired": self.expired,
            "user_id": self.user_id,
            "channel": self.channel,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "attempts_left": self.attempts_left,
            "expires_at": self.expires_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "consumed_at": self.consumed_at.isoformat() if self.consumed_at else None,
            "last_decision": self.last_decision,
            "last_reasons": list(self.last_reasons),
            "last_job_id": str(self.last_job_id) if self.last_job_id else None,
            "consumed_by_job": str(self.consumed_by_job) if self.consumed_by_job else None,
            "probe_image_key": self.probe_image_key,
        }


def nonce_digest(nonce: str) -> bytes:
    return hashlib.sha256(nonce.encode()).digest()


_COLUMNS = (
    "session_id, status, user_id, channel, attempts, max_attempts, expires_at, created_at,"
    " expires_at <= now() AS expired, probe_image_key, frame_keys, last_decision, last_reasons,"
    " last_job_id, consumed_by_job, api_key_id, decided_at, consumed_at, nonce_sha256"
)


def _session(row: dict[str, Any]) -> LivenessSession:
    return LivenessSession(
        session_id=row["session_id"],
        status=SessionStatus(row["status"]),
        user_id=row["user_id"],
        channel=row["channel"],
        attempts=int(row["attempts"]),
        max_attempts=int(row["max_attempts"]),
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        expired=bool(row["expired"]),
        probe_image_key=row["probe_image_key"],
        frame_keys=[str(k) for k in row["frame_keys"] or []],
        last_decision=row["last_decision"],
        last_reasons=[str(r) for r in row["last_reasons"] or []],
        last_job_id=row["last_job_id"],
        consumed_by_job=row["consumed_by_job"],
        api_key_id=row["api_key_id"],
        decided_at=row["decided_at"],
        consumed_at=row["consumed_at"],
        nonce_sha256=bytes(row["nonce_sha256"]),
    )


def create_session(
    conn: psycopg.Connection,
    *,
    session_id: UUID,
    nonce: str,
    user_id: str | None,
    channel: str | None,
    ttl_s: float,
    max_attempts: int,
    api_key_id: str | None = None,
) -> LivenessSession:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "INSERT INTO liveness_sessions (session_id, nonce_sha256, user_id, channel,"
            " max_attempts, expires_at, api_key_id)"
            " VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s), %s)"
            f" RETURNING {_COLUMNS}",
            (
                session_id,
                nonce_digest(nonce),
                user_id,
                channel,
                max_attempts,
                ttl_s,
                api_key_id,
            ),
        )
        row = cur.fetchone()
    assert row is not None
    return _session(row)


def get_session(conn: psycopg.Connection, session_id: UUID) -> LivenessSession | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM liveness_sessions WHERE session_id = %s", (session_id,)
        )
        row = cur.fetchone()
    return _session(row) if row is not None else None


def record_attempt(
    conn: psycopg.Connection,
    session_id: UUID,
    *,
    job_id: UUID,
    passed: bool,
    probe_image_key: str | None,
    frame_keys: Sequence[str],
    decision: str,
    reasons: Sequence[str],
) -> LivenessSession | None:
    """Count one decided attempt; None when the session no longer takes one (it was
    decided, expired or ran out of attempts since it was read).

    A pass records the probe frame; the attempt that uses up the cap without a pass
    fails the session.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "UPDATE liveness_sessions SET attempts = attempts + 1,"
            " status = CASE WHEN %(passed)s THEN 'passed'"
            "   WHEN attempts + 1 >= max_attempts THEN 'failed' ELSE 'open' END,"
            " probe_image_key = CASE WHEN %(passed)s THEN %(probe)s ELSE probe_image_key END,"
            " decided_at = CASE WHEN %(passed)s OR attempts + 1 >= max_attempts"
            "   THEN now() ELSE decided_at END,"
            " frame_keys = frame_keys || %(frames)s, last_decision = %(decision)s,"
            " last_reasons = %(reasons)s, last_job_id = %(job)s"
            " WHERE session_id = %(session)s AND status = 'open'"
            " AND attempts < max_attempts AND expires_at > now()"
            f" RETURNING {_COLUMNS}",
            {
                "passed": passed,
                "probe": probe_image_key,
                "frames": Jsonb(list(frame_keys)),
                "decision": decision,
                "reasons": Jsonb(list(reasons)),
                "job": job_id,
                "session": session_id,
            },
        )
        row = cur.fetchone()
    return _session(row) if row is not None else None


def consume(
    conn: psycopg.Connection, session_id: UUID, *, job_id: UUID, user_id: str
) -> LivenessSession | None:
    """Mark a passed, unexpired session used by verification ``job_id`` of ``user_id``;
    None when it is not (any more) passed, has expired, or belongs to another user.

    An anonymous session takes the verified user's id, so that user's erasure finds the
    frames it holds.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "UPDATE liveness_sessions SET status = 'consumed', consumed_by_job = %(job)s,"
            " consumed_at = now(), user_id = coalesce(user_id, %(user)s)"
            " WHERE session_id = %(session)s AND status = 'passed' AND expires_at > now()"
            " AND (user_id IS NULL OR user_id = %(user)s)"
            f" RETURNING {_COLUMNS}",
            {"job": job_id, "user": user_id, "session": session_id},
        )
        row = cur.fetchone()
    return _session(row) if row is not None else None


def frame_keys_of_user(conn: psycopg.Connection, user_id: str) -> set[str]:
    """Every frame of the user's sessions (the probe frame is one of them)."""
    rows = conn.execute(
        "SELECT DISTINCT jsonb_array_elements_text(frame_keys) FROM liveness_sessions"
        " WHERE user_id = %s",
        (user_id,),
    ).fetchall()
    probes = conn.execute(
        "SELECT probe_image_key FROM liveness_sessions"
        " WHERE user_id = %s AND probe_image_key IS NOT NULL",
        (user_id,),
    ).fetchall()
    return {str(r[0]) for r in rows} | {str(r[0]) for r in probes}


def delete_user_sessions(conn: psycopg.Connection, user_id: str) -> int:
    cur = conn.execute("DELETE FROM liveness_sessions WHERE user_id = %s", (user_id,))
    return cur.rowcount
