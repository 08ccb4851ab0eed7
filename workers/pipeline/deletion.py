"""Right to erasure: remove a user's templates, source images and pending jobs.

Order matters for crash safety. The S3 objects go first, then the rows, in the
job's commit transaction. A crash in between leaves rows whose images are gone;
the retry lists the same keys again and deleting a missing object is a no-op.
The reverse order could lose track of images for good.

Concurrent work on the same user is fenced off inside the transaction: the
user's queued and running jobs are marked ``failed`` (``user_deleted``) first,
which blocks on, or is seen by, the job runner's ``FOR UPDATE`` re-check, so an
enrollment in flight can no longer commit templates after the deletion. If an
enrollment committed images this run did not delete, the transaction rolls back
and the job is retried.

The audit entry records counts only: no keys, no embeddings, no scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg

from shared.db.audit import append_audit
from shared.errors import ErrorCode, TransientError
from shared.schemas import DeleteUserRequest, JobKind
from shared.storage import ImageStore
from workers.job_runner import JobContext, Outcome

log = logging.getLogger(__name__)


def user_prefix(user_id: str) -> str:
    """Where producers upload a user's enrollment images (``FaceauthClient``, backfill)."""
    return f"enroll/{user_id}/"


def candidate_keys(conn: psycopg.Connection, store: ImageStore, user_id: str) -> set[str]:
    """Every object that holds a picture tied to the user."""
    keys = set(store.list_keys(user_prefix(user_id)))
    rows = conn.execute(
        "SELECT DISTINCT source_image_key FROM templates"
        " WHERE user_id = %s AND source_image_key IS NOT NULL",
        (user_id,),
    ).fetchall()
    keys.update(str(r[0]) for r in rows)
    # Probe photos of the user's verifications and the images of their enrollment jobs
    # (including failed ones that never produced a template).
    rows = conn.execute(
        "SELECT DISTINCT jsonb_array_elements_text(image_refs) FROM jobs WHERE user_id = %s",
        (user_id,),
    ).fetchall()
    keys.update(str(r[0]) for r in rows)
    return keys


def keys_of_other_users(conn: psycopg.Connection, user_id: str, keys: set[str]) -> set[str]:
    """Those of ``keys`` another user's template was made from: never delete them.

    Producers may reference existing keys, so one object can back two users; erasing
    one user must not take away the other's re-embedding source.
    """
    if not keys:
        return set()
    rows = conn.execute(
        "SELECT DISTINCT source_image_key FROM templates"
        " WHERE user_id <> %s AND source_image_key = ANY(%s)",
        (user_id, sorted(keys)),
    ).fetchall()
    return {str(r[0]) for r in rows}


@dataclass
class DeletedImages:
    deleted: set[str] = field(default_factory=set)  # existed and were removed
    missing: set[str] = field(default_factory=set)  # referenced, already gone
    kept: set[str] = field(default_factory=set)  # shared with another user's template


def delete_images(store: ImageStore, keys: set[str], protected: set[str]) -> DeletedImages:
    out = DeletedImages(kept=keys & protected)
    for key in sorted(keys - protected):
        if store.exists(key):
            store.delete(key)
            out.deleted.add(key)
        else:
            out.missing.add(key)
    return out


def _cancel_pending_jobs(conn: psycopg.Connection, user_id: str, own_job: Any) -> list[str]:
    rows = conn.execute(
        "UPDATE jobs SET status = 'failed', error_code = %s, error_message = %s,"
        " finished_at = now(), updated_at = now()"
        " WHERE user_id = %s AND status IN ('queued', 'running') AND job_id <> %s"
        " AND kind <> %s RETURNING job_id",
        (
            str(ErrorCode.USER_DELETED),
            "the user was deleted before this job finished",
            user_id,
            own_job,
            str(JobKind.DELETE_USER),
        ),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _revoke(task_ids: list[str]) -> None:
    """Best effort: the cancelled jobs are already ``failed``, so a worker that still receives
    one finds it finished and does nothing; revoking only spares it the trip."""
    if not task_ids:
        return
    try:
        from workers.celery_app import app

        app.control.revoke(task_ids)
    except Exception as exc:
        log.warning("could not revoke %d task(s): %s", len(task_ids), type(exc).__name__)


def delete_user(request: DeleteUserRequest, ctx: JobContext) -> Outcome:
    user_id = request.user_id
    store = ctx.runtime.store
    with ctx.runtime.pool.connection() as conn:
        keys = candidate_keys(conn, store, user_id)
        protected = keys_of_other_users(conn, user_id, keys)
    images = delete_images(store, keys, protected)
    result: dict[str, Any] = {
        "user_id": user_id,
        "images_deleted": len(images.deleted),
        "images_already_gone": len(images.missing),
        "images_kept_shared": len(images.kept),
    }

    def write(conn: psycopg.Connection) -> None:
        cancelled = _cancel_pending_jobs(conn, user_id, ctx.job_id)
        templates = conn.execute(
            "DELETE FROM templates WHERE user_id = %s RETURNING source_image_key, is_active",
            (user_id,),
        ).fetchall()
        handled = images.deleted | images.missing | images.kept
        late = {str(k) for k, _ in templates if k is not None and str(k) not in handled}
        if late:
            # An enrollment committed between the listing and now: start over.
            raise TransientError(
                ErrorCode.STORAGE_UNAVAILABLE,
                f"{len(late)} image(s) appeared during the deletion; retrying",
            )
        enrollments = conn.execute("DELETE FROM enrollments WHERE user_id = %s", (user_id,))
        users = conn.execute("DELETE FROM users WHERE user_id = %s", (user_id,))
        result.update(
            {
                "user_existed": users.rowcount > 0,
                "templates_deleted": len(templates),
                "active_templates_deleted": sum(1 for _, active in templates if active),
                "enrollments_deleted": enrollments.rowcount,
                "jobs_cancelled": len(cancelled),
            }
        )
        append_audit(
            conn,
            event="user_deleted",
            user_id=user_id,
            job_id=ctx.job_id,
            details={k: v for k, v in result.items() if k != "user_id"},
        )
        _revoke(cancelled)

    return Outcome(result=result, write=write)
