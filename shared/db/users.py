"""The ``users`` table: who is enrolled, their re-embedding consent, and erasure."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg


def opted_out_users(
    conn: psycopg.Connection, after: str | None, limit: int
) -> tuple[list[str], bool]:
    """Up to ``limit`` users who opted out of re-embedding, by user id after ``after``;
    and whether more follow."""
    rows = conn.execute(
        "SELECT user_id FROM users WHERE reembed_opt_out AND user_id > %s"
        " ORDER BY user_id LIMIT %s",
        (after or "", limit + 1),
    ).fetchall()
    users = [str(r[0]) for r in rows]
    return users[:limit], len(users) > limit


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


def delete_user(conn: psycopg.Connection, user_id: str) -> bool:
    """Remove the user's row; False when there was none."""
    cur = conn.execute("DELETE FROM users WHERE user_id = %s", (user_id,))
    return cur.rowcount > 0
