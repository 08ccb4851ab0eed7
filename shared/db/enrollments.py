"""The ``enrollments`` table: one row per enrollment of a user with a model version.

Rows are written with their templates (``templates.write_enrollment``, one transaction).
"""

from __future__ import annotations

import psycopg


def delete_user_enrollments(conn: psycopg.Connection, user_id: str) -> int:
    """Delete every enrollment of the user; how many there were."""
    cur = conn.execute("DELETE FROM enrollments WHERE user_id = %s", (user_id,))
    return cur.rowcount
