"""The keys that make a backfill safe to repeat: idempotency keys and upload keys.

Both are derived from content, never drawn at random, so every run of the same
manifest computes the same ones: a re-run finds its jobs and re-uploads onto its
objects instead of starting second enrollments or leaving orphans.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from uuid import UUID

from shared.storage import user_image_prefix

KEY_PREFIX = "backfill:"


def idempotency_key(user_id: str, refs: Sequence[str], after_job: UUID | None = None) -> str:
    """The row's key; ``after_job`` chains a retry to the failed (or outdated) job it replaces."""
    digest = hashlib.sha256()
    for part in (user_id, *refs):
        digest.update(part.encode())
        digest.update(b"\0")
    if after_job is not None:
        digest.update(b"after:" + after_job.hex.encode())
    return KEY_PREFIX + digest.hexdigest()[:48]


def upload_key(user_id: str, data: bytes, ext: str) -> str:
    """Where a local image of the user is uploaded: same bytes, same key.

    A resumed run re-uploads onto the same object instead of leaving orphans, and the
    key lives under the user's prefix that deletion clears.
    """
    digest = hashlib.sha256(data).hexdigest()[:32]
    return f"{user_image_prefix(user_id)}backfill-{digest}{ext}"
