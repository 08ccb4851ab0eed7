"""Attempt limits per user: a cool-down after consecutive failed decisions about the person.

Counted: a suspected presentation attack, frames of two people in one liveness session,
a verification that rejects (not the same person) or refuses for liveness. Not counted:
bad input (a missing or undecodable image, a photo that fails the quality gate, a bad
payload) and step_up. Bad input says nothing about who is in front of the camera and
teaches an attacker nothing about a threshold; counting it would let a broken client, or
anyone who knows a user id and sends garbage, lock the genuine user out. A success
(verification accept, a live session) resets the count. The cool-down refuses the user's
verifications and liveness checks with ``too_many_attempts`` and ``retry_after``.
"""

from __future__ import annotations

import math
from typing import Any
from uuid import UUID

import psycopg

from shared.config import Settings
from shared.db import attempts as attempt_repo
from shared.db.audit import append_audit
from shared.errors import ErrorCode, FaceauthError


def refuse_during_cooldown(conn: psycopg.Connection, user_id: str) -> None:
    remaining = attempt_repo.cooldown_remaining(conn, user_id)
    if remaining is None:
        return
    retry_after = max(1, math.ceil(remaining))
    raise FaceauthError(
        ErrorCode.TOO_MANY_ATTEMPTS,
        f"too many failed attempts for user {user_id!r}; try again in {retry_after} s",
        user_id=user_id,
        retry_after=retry_after,
    )


def count_decision(
    conn: psycopg.Connection,
    settings: Settings,
    *,
    user_id: str,
    job_id: UUID,
    failed: bool | None,
    what: str,
) -> dict[str, Any] | None:
    """Count one decision in the job's transaction: ``failed`` True (a failure about the
    person), False (a success) or None (neither). Returns the cool-down it started, if any
    (audited as ``attempts_cooldown_started``)."""
    if failed is None:
        return None
    if not failed:
        attempt_repo.record_success(conn, user_id)
        return None
    count = attempt_repo.record_failure(
        conn,
        user_id,
        max_failures=settings.attempt_max_failures,
        cooldown_s=settings.attempt_cooldown_s,
    )
    if not count.cooldown_started or count.cooldown_until is None:
        return None
    cooldown = {
        "failures": settings.attempt_max_failures,
        "cooldown_s": settings.attempt_cooldown_s,
        "until": count.cooldown_until.isoformat(),
        "retry_after": max(1, math.ceil(settings.attempt_cooldown_s)),
        "last_failure": what,
    }
    append_audit(
        conn, event="attempts_cooldown_started", user_id=user_id, job_id=job_id, details=cooldown
    )
    return cooldown
