"""Right to erasure: remove a user's templates, source images and pending jobs, their
liveness sessions (and the frames they hold) and their attempt counter.

Order matters for crash safety. The S3 objects go first, then the rows, in the
job's commit transaction. A crash in between leaves rows whose images are gone;
the retry lists the same keys again and deleting a missing object is a no-op.
The reverse order could lose track of images for good.

Concurrent work on the same user is fenced off inside the transaction: the
user's queued and running jobs are marked ``failed`` (``user_deleted``) first,
which blocks on, or is seen by, the job runner's ``FOR UPDATE`` re-check, so an
enrollment in flight can no longer commit templates after the deletion. If an
enrollment committed images this run did not delete, the transaction rolls back
and the job is retried (``deletion_race``).

The audit entry records counts only: no keys, no embeddings, no scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg

from shared.db import attempts as attempt_repo
from shared.db import enrollments as enrollment_repo
from shared.db import jobs as job_repo
from shared.db import liveness_sessions as session_repo
from shared.db import templates as template_repo
from shared.db import users as user_repo
from shared.db.audit import append_audit
from shared.errors import ErrorCode, TransientError
from shared.schemas import DeleteUserRequest, JobKind
from shared.storage import ImageStore, user_image_prefix
from workers.job_runner import JobContext, Outcome

log = logging.getLogger(__name__)


def candidate_keys(conn: psycopg.Connection, store: ImageStore, user_id: str) -> set[str]:
    """Every object that holds a picture tied to the user."""
    keys = set(store.list_keys(user_image_prefix(user_id)))
    keys.update(template_repo.source_image_keys(conn, user_id))
    # Probe photos of the user's verifications and the images of their enrollment jobs
    # (including failed ones that never produced a template).
    keys.update(job_repo.image_refs_of_user(conn, user_id))
    # Frames of the user's liveness sessions, anonymous ones a verification of theirs used
    # included (the session took the user's id then).
    keys.update(session_repo.frame_keys_of_user(conn, user_id))
    return keys


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
        protected = template_repo.keys_of_other_users(conn, user_id, keys)
    images = delete_images(store, keys, protected)
    result: dict[str, Any] = {
        "user_id": user_id,
        "images_deleted": len(images.deleted),
        "images_already_gone": len(images.missing),
        "images_kept_shared": len(images.kept),
    }

    def write(conn: psycopg.Connection) -> None:
        cancelled = job_repo.cancel_user_jobs(
            conn,
            user_id,
            except_job=ctx.job_id,
            except_kind=JobKind.DELETE_USER,
            message="the user was deleted before this job finished",
        )
        templates = template_repo.delete_user_templates(conn, user_id)
        handled = images.deleted | images.missing | images.kept
        late = {str(k) for k, _ in templates if k is not None and str(k) not in handled}
        if late:
            # An enrollment committed between the listing and now. Retrying is the right
            # answer (the next attempt lists and deletes those images too), so the error is
            # transient; it has its own code because storage did nothing wrong.
            raise TransientError(
                ErrorCode.DELETION_RACE,
                f"{len(late)} image(s) appeared during the deletion; retrying",
            )
        enrollments_deleted = enrollment_repo.delete_user_enrollments(conn, user_id)
        user_existed = user_repo.delete_user(conn, user_id)
        sessions_deleted = session_repo.delete_user_sessions(conn, user_id)
        counters_deleted = attempt_repo.delete_user_counter(conn, user_id)
        result.update(
            {
                "user_existed": user_existed,
                "templates_deleted": len(templates),
                "active_templates_deleted": sum(1 for _, active in templates if active),
                "enrollments_deleted": enrollments_deleted,
                "jobs_cancelled": len(cancelled),
                "liveness_sessions_deleted": sessions_deleted,
                "attempt_counters_deleted": counters_deleted,
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
