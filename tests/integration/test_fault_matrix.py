"""A batch of enrollments through ordinary faults: every job ends, once, with its own outcome.

Each fault lands while the batch runs: a pool child or the worker's main process is
killed with SIGKILL, Redis restarts, Postgres or S3 is down for a while. Afterwards
every job must have succeeded, every user must be enrolled exactly once, and the
worker must serve the next job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from uuid import UUID, uuid4

import psutil
import pytest

from .conftest import LiveStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PEOPLE = ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]
BATCH = 16
OUTAGE_S = 5.0


def _finished(live: LiveStack, job_ids: list[UUID]) -> int:
    try:
        rows = live.sql(
            "SELECT count(*) FROM jobs WHERE job_id = ANY(%s)"
            " AND status IN ('succeeded', 'failed')",
            job_ids,
        )
    except Exception:  # Postgres is the fault being injected
        return 0
    return int(rows[0][0])  # type: ignore[call-overload]


def _wait_finished(live: LiveStack, job_ids: list[UUID], n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _finished(live, job_ids) < n:
        assert time.monotonic() < deadline, f"{_finished(live, job_ids)}/{n} jobs finished"
        time.sleep(0.1)


def _kill_pool_child(live: LiveStack) -> None:
    children = psutil.Process(live.worker.pid).children()
    assert children, "the worker has no pool child"
    children[0].kill()


def _kill_main_process(live: LiveStack) -> None:
    old = live.worker
    psutil.Process(old.pid).kill()  # the main process only: its pool child is orphaned
    time.sleep(1.0)
    live.restart_worker()


def _restart_redis(live: LiveStack) -> None:
    live.stack.restart_redis()


def _postgres_down(live: LiveStack) -> None:
    live.stack.stop_postgres()
    time.sleep(OUTAGE_S)
    live.stack.start_postgres()


def _s3_down(live: LiveStack) -> None:
    live.stack.stop_s3()
    time.sleep(OUTAGE_S)
    live.stack.start_s3()


FAULTS: dict[str, Callable[[LiveStack], None]] = {
    "pool child killed": _kill_pool_child,
    "main process killed": _kill_main_process,
    "redis restarted": _restart_redis,
    "postgres down": _postgres_down,
    "s3 down": _s3_down,
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_enrollments_survive(live: LiveStack, faces: Path, fault: str) -> None:
    tag = f"fault-{fault.split()[0]}-{uuid4().hex[:6]}"
    users = [f"{tag}-{i}" for i in range(BATCH)]
    photos = [sorted((faces / "identities" / p).iterdir())[0].read_bytes() for p in PEOPLE]
    job_ids = [
        live.client.submit_enrollment(user, [photos[i % len(photos)]], liveness=False)
        for i, user in enumerate(users)
    ]
    _wait_finished(live, job_ids, 2, timeout=120)
    worker = live.worker
    try:
        assert _finished(live, job_ids) < BATCH, "the fault must land mid-batch"
        FAULTS[fault](live)
        _wait_finished(live, job_ids, BATCH, timeout=240)
    finally:
        if live.worker is not worker:
            worker.stop()  # whatever the killed worker left behind (an orphaned pool child)
        if not live.worker.is_alive():
            live.restart_worker()
    statuses = live.sql(
        "SELECT status, error_code, count(*) FROM jobs WHERE job_id = ANY(%s)"
        " GROUP BY status, error_code",
        job_ids,
    )
    assert statuses == [("succeeded", None, BATCH)]
    deliveries = live.sql(
        "SELECT max(attempts), max(publish_count), sum(attempts) FROM jobs WHERE job_id = ANY(%s)",
        job_ids,
    )
    print(f"{fault}: max attempts, max publications, total attempts = {deliveries[0]}")
    per_user = live.sql(
        "SELECT e.user_id, count(DISTINCT e.enrollment_id), count(t.template_id)"
        " FROM enrollments e JOIN templates t USING (enrollment_id)"
        " WHERE e.user_id LIKE %s GROUP BY e.user_id",
        tag + "-%",
    )
    assert sorted(per_user) == sorted((u, 1, 2) for u in users)  # one image + the mean
    assert live.sql("SELECT count(*) FROM jobs WHERE user_id LIKE %s", tag + "-%") == [(BATCH,)]
    follow_up = live.client.wait(live.client.submit_inspection(photos[0]), timeout=60)
    assert follow_up.status == "succeeded"
