"""Bulk backfill through the real queue, database, S3 and worker.

Also the idempotency-key contract every producer relies on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from uuid import uuid4

import pytest

from deploy.demo import worker_env
from shared.backfill import BackfillOptions, BackfillRunner, BackfillSummary, idempotency_key
from shared.backfill.manifest import read_manifest
from shared.backfill.outcomes import read_outcomes
from shared.db import jobs as job_repo
from shared.db.pool import get_pool
from shared.paths import REPO_ROOT
from shared.schemas import EnrollRequest, JobKind

from .conftest import VISIBILITY_TIMEOUT_S, LiveStack

pytestmark = pytest.mark.integration

PEOPLE = ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]


def photos(faces: Path, person: str) -> list[Path]:
    return sorted((faces / "identities" / person).iterdir())


def run(live: LiveStack, manifest: Path, **options: object) -> BackfillSummary:
    opts = BackfillOptions(progress=False, **options)  # type: ignore[arg-type]
    runner = BackfillRunner(live.settings, opts, client=live.client)
    rows = read_manifest(manifest, bucket=live.settings.s3_bucket)
    return runner.run(rows, outcome_path=manifest.with_suffix(".outcomes.jsonl"))


def count(live: LiveStack, query: str, *params: object) -> int:
    return int(live.sql(query, *params)[0][0])  # type: ignore[call-overload]


def backfill_jobs(live: LiveStack, prefix: str) -> int:
    return count(live, "SELECT count(*) FROM jobs WHERE user_id LIKE %s", prefix + "%")


def test_identities_with_bad_rows_then_a_rerun_does_nothing_new(
    live: LiveStack, faces: Path, tmp_path: Path
) -> None:
    run_id = uuid4().hex[:6]
    users = {person: f"bf-{run_id}-{person}" for person in PEOPLE}
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("this is not a JPEG")
    lines = ["user_id,images"]
    lines += [f"{users[p]},{';'.join(str(f) for f in photos(faces, p))}" for p in PEOPLE]
    four = ";".join(str(f) for f in photos(faces, "obama") + photos(faces, "biden")[:1])
    lines += [
        f"bf-{run_id}-group,{faces / 'group' / 'obama_and_biden.jpg'}",  # worker: 2 faces
        f"bf-{run_id}-missing,{tmp_path / 'nowhere.jpg'}",  # no such local file
        f"not a user id,{photos(faces, 'obama')[0]}",
        f"bf-{run_id}-four,{four}",  # more than enroll_max_images
        f"bf-{run_id}-text,{not_an_image}",  # uploaded, but the worker cannot decode it
        f"bf-{run_id}-nokey,legacy/{run_id}/absent.jpg",  # a key that is not in the bucket
        f"{users['obama']},{photos(faces, 'obama')[0]}",  # the same user twice
    ]
    manifest = tmp_path / "people.csv"
    manifest.write_text("\n".join(lines) + "\n")
    expected_rejections = {
        "quality_rejected": 1,
        "image_not_found": 2,
        "invalid_payload": 2,
        "too_many_images": 1,
        "image_undecodable": 1,
    }

    first = run(live, manifest, max_in_flight=3, chunk_size=4)
    assert first.enrolled == len(PEOPLE), first.to_dict()
    assert dict(first.rejected) == expected_rejections, first.to_dict()
    assert not first.failed and first.aborted is None
    assert first.rows == len(lines) - 1
    for person, user in users.items():
        assert count(live, "SELECT count(*) FROM enrollments WHERE user_id = %s", user) == 1
        active = count(
            live, "SELECT count(*) FROM templates WHERE user_id = %s AND is_active", user
        )
        assert active == len(photos(faces, person)) + 1
    outcomes = {(o["line"], o["status"], o.get("code")) for o in read_outcomes(
        manifest.with_suffix(".outcomes.jsonl")
    )}  # fmt: skip
    assert len(outcomes) == first.rows
    assert (7, "rejected", "quality_rejected") in outcomes  # the group photo's line
    assert (9, "rejected", "invalid_payload") in outcomes
    group = next(
        o for o in read_outcomes(manifest.with_suffix(".outcomes.jsonl")) if o["line"] == 7
    )
    assert "multiple_faces" in group["reasons"] and group["job_id"]

    jobs_before = backfill_jobs(live, f"bf-{run_id}")
    tables_before = live.table_counts()
    second = run(live, manifest, max_in_flight=3, chunk_size=4)
    assert second.new_jobs == 0 and second.enrolled == 0, second.to_dict()
    assert second.skipped == len(PEOPLE)
    assert dict(second.rejected) == expected_rejections
    assert backfill_jobs(live, f"bf-{run_id}") == jobs_before
    after = live.table_counts()
    assert {k: v for k, v in after.items() if k != "audit_log"} == {
        k: v for k, v in tables_before.items() if k != "audit_log"
    }


def _many_rows_manifest(faces: Path, tmp_path: Path, prefix: str, n: int) -> Path:
    lines = ["user_id,images"]
    for i in range(n):
        files = photos(faces, PEOPLE[i % len(PEOPLE)])[:2]
        lines.append(f"{prefix}-{i:03d},{';'.join(str(f) for f in files)}")
    manifest = tmp_path / f"{prefix}.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _assert_each_enrolled_once(live: LiveStack, prefix: str, n: int) -> None:
    rows = live.sql(
        "SELECT user_id, count(*) FROM enrollments WHERE user_id LIKE %s GROUP BY user_id",
        prefix + "-%",
    )
    assert len(rows) == n and all(c == 1 for _, c in rows), rows
    jobs = live.sql(
        "SELECT user_id, count(*) FROM jobs WHERE user_id LIKE %s AND kind = 'enroll'"
        " GROUP BY user_id",
        prefix + "-%",
    )
    assert len(jobs) == n and all(c == 1 for _, c in jobs), jobs


def test_worker_killed_during_backfill_loses_nothing_and_enrolls_nobody_twice(
    live: LiveStack, faces: Path, tmp_path: Path
) -> None:
    n = 16
    prefix = f"bfkill-{uuid4().hex[:6]}"
    manifest = _many_rows_manifest(faces, tmp_path, prefix, n)
    opts = BackfillOptions(progress=False, max_in_flight=4, chunk_size=5)
    runner = BackfillRunner(live.settings, opts, client=live.client)
    rows = read_manifest(manifest, bucket=live.settings.s3_bucket)
    result: list[BackfillSummary] = []
    thread = threading.Thread(target=lambda: result.append(runner.run(rows)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while runner.summary.enrolled < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner.summary.enrolled >= 3
    live.worker.kill()  # SIGKILL mid-run: running and prefetched messages are unacked
    # kombu sweeps unacknowledged messages back into the queue when a worker starts and
    # then only every ~100 s; starting once they are past the visibility timeout means the
    # start-up sweep returns them (otherwise the test would idle through the periodic one).
    time.sleep(VISIBILITY_TIMEOUT_S + 1)
    live.restart_worker()
    thread.join(timeout=300)
    assert not thread.is_alive()
    (summary,) = result
    assert summary.enrolled == n and not summary.failed and not summary.rejected, summary
    _assert_each_enrolled_once(live, prefix, n)


def test_backfill_process_killed_and_rerun_resumes(
    live: LiveStack, faces: Path, tmp_path: Path
) -> None:
    n = 12
    prefix = f"bfresume-{uuid4().hex[:6]}"
    manifest = _many_rows_manifest(faces, tmp_path, prefix, n)
    env = {**os.environ, **live.endpoints.env(), **worker_env()}
    cmd = [sys.executable, "-c", "from shared.cli import main; main()", "backfill", str(manifest)]
    cmd += ["--max-in-flight", "3", "--chunk-size", "4", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while backfill_jobs(live, prefix) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    submitted = backfill_jobs(live, prefix)
    assert 0 < submitted < n, "the kill should land mid-run"
    summary = run(live, manifest, max_in_flight=3, chunk_size=4)
    assert summary.enrolled + summary.skipped == n, summary.to_dict()
    assert summary.new_jobs == n - submitted and not summary.failed
    _assert_each_enrolled_once(live, prefix, n)


def test_lost_message_is_sent_again(live: LiveStack, faces: Path, tmp_path: Path) -> None:
    """A job row without a message (producer died between the two) still gets done.

    The backfill waits on the job it finds; the worker's reconciler publishes it again
    once its queued lease has run out.
    """
    user = f"bforphan-{uuid4().hex[:6]}"
    key = f"legacy/{user}/1.jpg"
    live.client.store.put(key, photos(faces, "biden")[0].read_bytes(), "image/jpeg")
    manifest = tmp_path / "orphan.jsonl"
    ref = f"s3://{live.settings.s3_bucket}/{key}"
    manifest.write_text(f'{{"user_id": "{user}", "images": ["{ref}"]}}\n')
    request = EnrollRequest(
        job_id=uuid4(),
        idempotency_key=idempotency_key(user, [ref]),
        user_id=user,
        image_keys=[key],
        liveness=False,
    )
    with get_pool(live.settings).connection() as conn:
        job_repo.create_job(
            conn,
            job_id=request.job_id,  # type: ignore[arg-type]
            kind=JobKind.ENROLL,
            idempotency_key=request.idempotency_key,
            user_id=user,
            image_refs=[key],
            payload=request.model_dump(mode="json"),
            queued_timeout_s=0.5,
        )
    summary = run(live, manifest)
    assert (summary.enrolled, summary.new_jobs, summary.reused_jobs) == (1, 0, 1)
    ((published,),) = live.sql("SELECT publish_count FROM jobs WHERE job_id = %s", request.job_id)
    assert published == 2  # the row's own publication (lost) and the reconciler's
    assert live.sql("SELECT source_image_key FROM templates WHERE user_id = %s AND NOT"
                    " is_mean_template", user) == [(key,)]  # fmt: skip


def test_s3_prefix_source(live: LiveStack, faces: Path, tmp_path: Path) -> None:
    from shared.backfill import run_backfill

    prefix = f"legacy-{uuid4().hex[:6]}"
    for person in PEOPLE[:3]:
        for i, photo in enumerate(photos(faces, person)[:2]):
            live.client.store.put(f"{prefix}/{person}/{i}.jpg", photo.read_bytes(), "image/jpeg")
    live.client.store.put(f"{prefix}/{PEOPLE[0]}/readme.txt", b"not an image", "text/plain")
    outcome = tmp_path / "prefix.jsonl"
    opts = BackfillOptions(progress=False, outcome_path=outcome)
    summary = run_backfill(f"s3://{live.settings.s3_bucket}/{prefix}/", opts, live.settings)
    assert summary.enrolled == 3 and summary.uploaded_images == 0, summary.to_dict()
    keys = live.sql(
        "SELECT source_image_key FROM templates WHERE user_id = %s AND NOT is_mean_template"
        " ORDER BY 1",
        PEOPLE[0],
    )
    assert keys == [(f"{prefix}/{PEOPLE[0]}/0.jpg",), (f"{prefix}/{PEOPLE[0]}/1.jpg",)]
    assert len(read_outcomes(outcome)) == 3


def test_same_idempotency_key_returns_the_first_job(live: LiveStack, faces: Path) -> None:
    user = f"idem-{uuid4().hex[:6]}"
    key = f"signup-{uuid4().hex}"
    images = [p.read_bytes() for p in photos(faces, "kit_harington")]
    first = live.client.submit_enrollment(user, images, idempotency_key=key)
    again = live.client.submit_enrollment(user, images, idempotency_key=key)
    assert again == first
    assert live.client.wait(first, timeout=120).status == "succeeded"
    after_finish = live.client.submit_enrollment(user, images[:1], idempotency_key=key)
    assert after_finish == first
    time.sleep(1.0)  # give a (wrongly) enqueued second job the time to run
    assert count(live, "SELECT count(*) FROM jobs WHERE idempotency_key = %s", key) == 1
    assert count(live, "SELECT count(*) FROM enrollments WHERE user_id = %s", user) == 1
    assert count(live, "SELECT count(*) FROM templates WHERE user_id = %s", user) == len(images) + 1
