"""What happened to each backfill row: the JSONL outcome file and the run summary.

The outcome file gets one line per row as soon as the row's fate is known
(completion order, not source order; ``line`` points back into the source). It
holds codes, ids and scores, never image bytes or embeddings.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from shared.errors import ErrorCode

# Codes that say nothing about the row itself: the infrastructure failed, so the next run
# tries the row again. Every other code is a verdict on the row and is kept.
RETRYABLE_CODES = frozenset(
    {
        ErrorCode.RETRIES_EXHAUSTED,
        ErrorCode.BROKER_UNAVAILABLE,
        ErrorCode.STORAGE_UNAVAILABLE,
        ErrorCode.DATABASE_UNAVAILABLE,
        ErrorCode.INTERNAL,
        ErrorCode.MODEL_PACK_INVALID,
        ErrorCode.LIVENESS_MODEL_INVALID,
        ErrorCode.ONNX_PROVIDER_UNAVAILABLE,
        ErrorCode.MODEL_VERSION_MISMATCH,
    }
)
# Local codes of the backfill itself (not job error codes).
TIMEOUT = "backfill_timeout"  # the job did not finish before the run stopped waiting
ABORTED = "backfill_aborted"  # the run stopped (too many consecutive infrastructure errors)


def is_retryable(code: str | None) -> bool:
    return code is None or code in RETRYABLE_CODES or code in (TIMEOUT, ABORTED)


class RowStatus(StrEnum):
    ENROLLED = "enrolled"  # a job of this run (or one it found still running) enrolled the user
    SKIPPED = "skipped"  # already enrolled with the current model version
    REJECTED = "rejected"  # the row or its images are unusable (a verdict; not retried)
    FAILED = "failed"  # infrastructure trouble; the next run retries the row


@dataclass
class RowOutcome:
    line: int
    user_id: str | None
    status: RowStatus
    code: str | None = None
    message: str | None = None
    job_id: str | None = None
    new_job: bool = False
    reasons: list[str] = field(default_factory=list)  # per-image quality reason codes
    duplicate_of: list[dict[str, Any]] = field(default_factory=list)
    model_version: str | None = None

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v not in (None, [], {})}
        data["status"] = str(self.status)
        data["new_job"] = self.new_job
        return json.dumps(data, separators=(",", ":"))


@dataclass
class BackfillSummary:
    rows: int = 0
    enrolled: int = 0
    skipped: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    duplicates_flagged: int = 0
    new_jobs: int = 0
    reused_jobs: int = 0
    uploaded_images: int = 0
    seconds: float = 0.0
    aborted: str | None = None
    outcome_file: str | None = None

    def add(self, outcome: RowOutcome) -> None:
        self.rows += 1
        if outcome.status is RowStatus.ENROLLED:
            self.enrolled += 1
            self.duplicates_flagged += bool(outcome.duplicate_of)
        elif outcome.status is RowStatus.SKIPPED:
            self.skipped += 1
        elif outcome.status is RowStatus.REJECTED:
            self.rejected[outcome.code or "unknown"] += 1
        else:
            self.failed[outcome.code or "unknown"] += 1

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def enrollments_per_second(self) -> float:
        return self.enrolled / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rejected"] = dict(sorted(self.rejected.items()))
        data["failed"] = dict(sorted(self.failed.items()))
        data["rows_per_second"] = round(self.rows_per_second, 3)
        data["enrollments_per_second"] = round(self.enrollments_per_second, 3)
        data["seconds"] = round(self.seconds, 3)
        return data


class OutcomeWriter:
    """Append outcome lines to a JSONL file (truncated at open), flushed as they come."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def __enter__(self) -> OutcomeWriter:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="utf-8")
        return self

    def write(self, outcome: RowOutcome) -> None:
        if self._fh is not None:
            self._fh.write(outcome.to_json() + "\n")

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_outcomes(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
