"""The ``enrollments`` table: one row per enrollment of a user with a model version.

Rows are written with their templates (``templates.write_enrollment``, one transaction).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import dict_row


def delete_user_enrollments(conn: psycopg.Connection, user_id: str) -> int:
    """Delete every enrollment of the user; how many there were."""
    cur = conn.execute("DELETE FROM enrollments WHERE user_id = %s", (user_id,))
    return cur.rowcount


@dataclass(frozen=True)
class VersionEnrollment:
    """A user's active enrollment with one model version: counts and dates, no embeddings."""

    model_version: str
    model_name: str
    enrollment_id: str
    image_templates: int  # active per-image templates
    mean_template: bool  # whether the active mean template exists
    n_images: int
    liveness_checked: bool
    created_at: datetime
    active_model_version: bool  # the version 1:N search and duplicate checks use


@dataclass(frozen=True)
class UserEnrollmentState:
    user_id: str
    created_at: datetime
    updated_at: datetime
    enrollments: list[VersionEnrollment]


def enrollment_state(conn: psycopg.Connection, user_id: str) -> UserEnrollmentState | None:
    """The user's active enrollments per model version (None: no such user). Read only."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT user_id, created_at, updated_at FROM users WHERE user_id = %s", (user_id,)
        )
        user = cur.fetchone()
        if user is None:
            return None
        cur.execute(
            "SELECT e.model_version, mv.model_name, e.enrollment_id, e.n_images,"
            " e.liveness_checked, e.created_at, mv.is_active,"
            " count(t.template_id) FILTER (WHERE NOT t.is_mean_template) AS image_templates,"
            " count(t.template_id) FILTER (WHERE t.is_mean_template) AS mean_templates"
            " FROM enrollments e JOIN model_versions mv USING (model_version)"
            " LEFT JOIN templates t ON t.enrollment_id = e.enrollment_id AND t.is_active"
            " WHERE e.user_id = %s AND e.is_active"
            " GROUP BY e.enrollment_id, mv.model_name, mv.is_active"
            " ORDER BY e.created_at, e.model_version",
            (user_id,),
        )
        rows = cur.fetchall()
    return UserEnrollmentState(
        user_id=str(user["user_id"]),
        created_at=user["created_at"],
        updated_at=user["updated_at"],
        enrollments=[
            VersionEnrollment(
                model_version=str(r["model_version"]),
                model_name=str(r["model_name"]),
                enrollment_id=str(r["enrollment_id"]),
                image_templates=int(r["image_templates"]),
                mean_template=int(r["mean_templates"]) > 0,
                n_images=int(r["n_images"]),
                liveness_checked=bool(r["liveness_checked"]),
                created_at=r["created_at"],
                active_model_version=bool(r["is_active"]),
            )
            for r in rows
        ],
    )
