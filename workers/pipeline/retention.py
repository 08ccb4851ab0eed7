"""Source-image retention for users who opted out of re-embedding.

A user's source images are kept so their templates can be recomputed when the
model changes. Users who opted out of that (``users.reembed_opt_out``) have
their images removed once older than ``FACEAUTH_SOURCE_IMAGE_RETENTION_DAYS``
(0 = keep forever). Age is the object's S3 ``last_modified``. Templates keep
working; their ``source_image_key`` is cleared so nothing points at a deleted
object (and re-embedding knows there is nothing to re-embed).

One job handles a page of users (``max_users``, by user id) and returns the
cursor of the next page; ``faceauth retention run`` loops until done.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from shared.db import templates as template_repo
from shared.db import users as user_repo
from shared.db.audit import append_audit
from shared.errors import ErrorCode, FaceauthError
from shared.schemas import RetentionRequest
from shared.storage import ImageStore, user_image_prefix
from workers.job_runner import JobContext, Outcome


def _expired_keys(store: ImageStore, keys: set[str], cutoff: datetime) -> tuple[set[str], set[str]]:
    """(older than ``cutoff``, already missing) among ``keys``."""
    old: set[str] = set()
    missing: set[str] = set()
    for key in sorted(keys):
        try:
            info = store.stat(key)
        except FaceauthError as exc:
            if exc.code is ErrorCode.IMAGE_NOT_FOUND:
                missing.add(key)
                continue
            raise
        if info.last_modified is not None and info.last_modified < cutoff:
            old.add(key)
    return old, missing


def apply_retention(request: RetentionRequest, ctx: JobContext) -> Outcome:
    settings = ctx.runtime.settings
    days = request.older_than_days or settings.source_image_retention_days
    result: dict[str, Any] = {
        "older_than_days": days,
        "dry_run": request.dry_run,
        "users_scanned": 0,
        "users_with_expired_images": 0,
        "images_deleted": 0,
        "images_already_gone": 0,
        "templates_updated": 0,
        "next_after_user": None,
    }
    if days <= 0:
        result["disabled"] = True  # FACEAUTH_SOURCE_IMAGE_RETENTION_DAYS=0: keep forever
        return Outcome(result=result)
    cutoff = datetime.now(UTC) - timedelta(days=days)
    result["cutoff"] = cutoff.isoformat()
    store = ctx.runtime.store

    with ctx.runtime.pool.connection() as conn:
        users, more = user_repo.opted_out_users(conn, request.after_user, request.max_users)
        per_user: dict[str, set[str]] = defaultdict(set)  # user -> keys to clear in templates
        for user_id in users:
            keys = template_repo.source_image_keys(conn, user_id) | set(
                store.list_keys(user_image_prefix(user_id))
            )
            keys -= template_repo.keys_of_other_users(conn, user_id, keys)
            old, missing = _expired_keys(store, keys, cutoff)
            if not request.dry_run:
                for key in sorted(old):
                    store.delete(key)
            result["images_deleted"] += len(old)
            result["images_already_gone"] += len(missing)
            if old or missing:
                per_user[user_id] = old | missing
    result["users_scanned"] = len(users)
    result["users_with_expired_images"] = len(per_user)
    result["next_after_user"] = users[-1] if more and users else None
    if request.dry_run:
        return Outcome(result=result)

    def write(conn: psycopg.Connection) -> None:
        updated = 0
        for user_id, keys in per_user.items():
            updated += template_repo.clear_source_keys(conn, user_id, keys)
            append_audit(
                conn,
                event="source_images_expired",
                user_id=user_id,
                job_id=ctx.job_id,
                details={"images_removed": len(keys), "older_than_days": days},
            )
        result["templates_updated"] = updated

    return Outcome(result=result, write=write)
