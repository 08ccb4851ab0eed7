"""Bulk enrollment from a manifest or an S3 prefix (``faceauth backfill``)."""

from shared.backfill.manifest import BadRow, ImageRef, ManifestError, ManifestRow
from shared.backfill.outcomes import BackfillSummary, RowOutcome, RowStatus
from shared.backfill.runner import BackfillOptions, BackfillRunner, idempotency_key, run_backfill

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
