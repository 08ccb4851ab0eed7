"""The bounded in-flight window of bulk producers, on a fake status lookup (no servers)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from shared.backfill.window import InFlightWindow
from shared.config import Settings
from shared.db.jobs import JobState
from shared.schemas import JobStatus


def _state(job_id: UUID, status: JobStatus) -> JobState:
    return JobState(
        job_id=job_id,
        idempotency_key=None,
        status=status,
        error_code=None,
        error_message=None,
        result={"ok": True} if status.finished else None,
        created_at=datetime.now(UTC),
    )


class FakeJobs:
    def __init__(self) -> None:
        self.status: dict[UUID, JobStatus] = {}
        self.queries: list[list[UUID]] = []

    def lookup(self, job_ids: Sequence[UUID]) -> dict[UUID, JobState]:
        self.queries.append(list(job_ids))
        return {j: _state(j, self.status[j]) for j in job_ids if j in self.status}


def test_room_collect_and_one_query_per_poll() -> None:
    jobs = FakeJobs()
    window: InFlightWindow[str] = InFlightWindow(Settings(), 2, lookup=jobs.lookup)
    assert window.has_room and not window
    a, b = uuid4(), uuid4()
    jobs.status.update({a: JobStatus.RUNNING, b: JobStatus.QUEUED})
    window.add(a, "alice")
    window.add(b, "bob")
    assert len(window) == 2 and not window.has_room

    assert window.collect() == []  # nothing finished yet
    jobs.status[b] = JobStatus.FAILED
    finished = window.collect()
    assert [(item, state.status) for item, state in finished] == [("bob", JobStatus.FAILED)]
    assert window.has_room and len(window) == 1
    assert jobs.queries == [[a, b], [a, b]]  # every job of the window, in one query

    jobs.status[a] = JobStatus.SUCCEEDED
    assert [item for item, _ in window.collect()] == ["alice"]
    assert window.collect() == [] and len(jobs.queries) == 3  # an empty window asks nothing


def test_clear_hands_back_what_was_tracked() -> None:
    jobs = FakeJobs()
    window: InFlightWindow[int] = InFlightWindow(Settings(), 1, lookup=jobs.lookup)
    window.add(uuid4(), 1)
    window.add(uuid4(), 2)  # a job found running may overfill the window
    assert sorted(window.clear()) == [1, 2]
    assert len(window) == 0 and window.has_room


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        InFlightWindow(Settings(), 0)
