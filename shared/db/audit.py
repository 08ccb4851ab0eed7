"""Append-only audit log. Callers pass scores and decisions, never embeddings or images."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

_FORBIDDEN_KEYS = {"embedding", "embeddings", "image", "image_bytes", "pixels"}


def append_audit(
    conn: psycopg.Connection,
    *,
    event: str,
    user_id: str | None,
    job_id: UUID | None,
    details: dict[str, Any],
) -> None:
    leaked = _FORBIDDEN_KEYS.intersection(details)
    if leaked:
        raise ValueError(f"audit details must not carry biometric data: {sorted(leaked)}")
    conn.execute(
        "INSERT INTO audit_log (event, user_id, job_id, details) VALUES (%s, %s, %s, %s)",
        (event, user_id, job_id, Jsonb(details)),
    )
