"""One worker process with several jobs in flight, model calls batched across them."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import psutil
import pytest

from deploy.devstack.ports import free_port

from .conftest import LiveStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PEOPLE = ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]
IN_FLIGHT = 4


@pytest.fixture
def batching_worker(live: LiveStack) -> Iterator[int]:
    """The stack's worker replaced by a threads-pool worker that batches; its metrics port."""
    live.worker.stop()
    port = free_port()
    env = {
        **live.worker_env(),
        "FACEAUTH_BATCH_MAX_SIZE": "16",
        "FACEAUTH_BATCH_MAX_WAIT_MS": "10",
        "FACEAUTH_DB_POOL_MAX_SIZE": str(IN_FLIGHT + 4),
        "FACEAUTH_ORT_INTRA_OP_THREADS": "1",
        "FACEAUTH_METRICS_PORT": str(port),
        # Jobs in flight from the configuration alone: no --pool/--concurrency flags.
        "FACEAUTH_WORKER_JOBS_IN_FLIGHT": str(IN_FLIGHT),
    }
    settings = live.settings
    worker = live.stack.start_worker(
        queues=[settings.queue_inference, settings.queue_io],
        concurrency=None,
        pool=None,
        extra_env=env,
        name="batching",
    )
    try:
        yield port
    finally:
        worker.stop()
        live.restart_worker()


def _photos(faces: Path) -> list[bytes]:
    return [sorted((faces / "identities" / p).iterdir())[0].read_bytes() for p in PEOPLE]


def _enroll_batch(live: LiveStack, faces: Path, tag: str, n: int) -> list[UUID]:
    photos = _photos(faces)
    return [
        live.client.submit_enrollment(f"{tag}-{i}", [photos[i % len(photos)]], liveness=True)
        for i in range(n)
    ]


def _batch_sizes(port: int) -> dict[str, tuple[float, float]]:
    """model -> (runs, faces) from the worker's faceauth_batch_size histogram."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, list[float]] = {}
    for kind, model, value in re.findall(
        r'^faceauth_batch_size_(count|sum)\{model="([^"]+)"\} (\S+)$', text, re.M
    ):
        out.setdefault(model, [0.0, 0.0])[0 if kind == "count" else 1] = float(value)
    return {m: (v[0], v[1]) for m, v in out.items()}


def test_jobs_in_flight_share_model_runs_and_each_ends_once(
    live: LiveStack, faces: Path, batching_worker: int
) -> None:
    tag = f"batch-{uuid4().hex[:6]}"
    job_ids = _enroll_batch(live, faces, tag, 12)
    jobs = [live.client.wait(j, timeout=120) for j in job_ids]
    assert all(j.status == "succeeded" for j in jobs), [j.error for j in jobs]
    sizes = _batch_sizes(batching_worker)
    recognizer = next(v for m, v in sizes.items() if m.startswith("recognizer:"))
    liveness = next(v for m, v in sizes.items() if m.startswith("liveness:"))
    detector = next(v for m, v in sizes.items() if m.startswith("detector:640:"))
    # Every image and face went through a batcher (a delivery whose lease a busy host let
    # run out may run a job twice; its outcome is still written once) ...
    assert detector[1] >= 12 and recognizer[1] >= 12 and liveness[1] >= 12
    # ... and some runs carried images or faces of several jobs.
    assert detector[0] < detector[1] and recognizer[0] < recognizer[1]
    rows = live.sql(
        "SELECT count(DISTINCT user_id), count(*) FROM enrollments WHERE user_id LIKE %s",
        tag + "-%",
    )
    assert rows == [(12, 12)]


def test_a_kill_in_the_middle_of_a_batch_loses_no_job_and_enrolls_nobody_twice(
    live: LiveStack, faces: Path, batching_worker: int
) -> None:
    tag = f"batchkill-{uuid4().hex[:6]}"
    job_ids = _enroll_batch(live, faces, tag, 16)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = live.sql(
            "SELECT count(*) FROM jobs WHERE job_id = ANY(%s) AND status = 'succeeded'", job_ids
        )[0][0]
        if done >= 3:  # type: ignore[operator]
            break
        time.sleep(0.05)
    main = psutil.Process(live.stack.workers[-1].pid)
    for proc in [*main.children(recursive=True), main]:  # SIGKILL, jobs mid-batch
        proc.kill()
    live.restart_worker()  # a plain worker picks up what the killed one held
    jobs = [live.client.wait(j, timeout=180) for j in job_ids]
    assert all(j.status == "succeeded" for j in jobs), [j.error for j in jobs]
    rows = live.sql(
        "SELECT count(DISTINCT user_id), count(*) FROM enrollments WHERE user_id LIKE %s",
        tag + "-%",
    )
    assert rows == [(16, 16)]
