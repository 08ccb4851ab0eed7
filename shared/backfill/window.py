"""A bounded window of submitted, unfinished jobs, watched through Postgres.

Bulk producers (the backfill, re-embedding) submit while the window has room and
collect what finished; the status of every job in the window is read in one
query per poll, never one each. However long the input, no more than the
window's size of messages waits in Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar
from uuid import UUID

from shared.config import Settings
from shared.db import jobs as job_repo
from shared.db.jobs import JobState
from shared.db.pool import get_pool

T = TypeVar("T")

StateLookup = Callable[[Sequence[UUID]], dict[UUID, JobState]]


class InFlightWindow(Generic[T]):
    """Jobs submitted and not finished yet, each with what the caller tracks it by."""

    def __init__(self, settings: Settings, size: int, *, lookup: StateLookup | None = None):
        if size < 1:
            raise ValueError("the in-flight window needs room for at least one job")
        self.size = size
        self._settings = settings
        self._lookup = lookup or self._job_states
        self._jobs: dict[UUID, T] = {}

    def _job_states(self, job_ids: Sequence[UUID]) -> dict[UUID, JobState]:
        with get_pool(self._settings).connection() as conn:
            return job_repo.job_states(conn, job_ids)

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def has_room(self) -> bool:
        """Fewer than ``size`` jobs unfinished: the caller may submit another."""
        return len(self._jobs) < self.size

    def add(self, job_id: UUID, item: T) -> None:
        """Track a submitted job (or one found still running; it may overfill the window)."""
        self._jobs[job_id] = item

    def collect(self) -> list[tuple[T, JobState]]:
        """Read every job's status (one query); remove and return those that finished."""
        if not self._jobs:
            return []
        states = self._lookup(list(self._jobs))
        return [(self._jobs.pop(s.job_id), s) for s in states.values() if s.status.finished]

    def clear(self) -> list[T]:
        """Stop tracking every job (they go on running); what was tracked."""
        items = list(self._jobs.values())
        self._jobs.clear()
        return items
