"""Bulk enrollment from a manifest or an S3 prefix (``faceauth backfill``) and re-embedding.

``source`` turns a manifest or an S3 prefix into rows, ``keys`` derives the idempotency
and upload keys that make a run safe to repeat, ``window`` bounds the submitted,
unfinished jobs, ``runner`` drives a backfill on top of them and ``reembed`` drives a
model migration on the same window.
"""

from shared.backfill.keys import idempotency_key
from shared.backfill.manifest import BadRow, ImageRef, ManifestError, ManifestRow
from shared.backfill.outcomes import BackfillSummary, RowOutcome, RowStatus
from shared.backfill.runner import BackfillOptions, BackfillRunner, run_backfill

__all__ = [
    "BackfillOptions",
    "BackfillRunner",
    "BackfillSummary",
    "BadRow",
    "ImageRef",
    "ManifestError",
    "ManifestRow",
    "RowOutcome",
    "RowStatus",
    "idempotency_key",
    "run_backfill",
]
