"""Every job reaches its own outcome: poison messages, forged messages, lost messages."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import redis

from shared.db import jobs as job_repo
from shared.db.pool import get_pool
from shared.schemas import EnrollRequest, JobKind, JobStatus
from tests.helpers_messages import encode, task_envelope

from .conftest import LiveStack

pytestmark = pytest.mark.integration


def _redis(live: LiveStack) -> redis.Redis:
    return redis.Redis.from_url(live.settings.broker_url)


def _photo(faces: Path, person: str = "biden") -> bytes:
    return sorted((faces / "identities" / person).iterdir())[0].read_bytes()


def _upload(live: LiveStack, faces: Path, user: str) -> str:
    key = f"enroll/{user}/{uuid4().hex}.jpg"
    return live.client.store.put(key, _photo(faces), "image/jpeg")


def _row_without_message(live: LiveStack, request: EnrollRequest, queued_timeout_s: float) -> None:
    """A queued job whose message never reached the broker (its producer died)."""
    assert request.job_id is not None
    with get_pool(live.settings).connection() as conn:
        job_repo.create_job(
            conn,
            job_id=request.job_id,
            kind=JobKind.ENROLL,
            idempotency_key=request.idempotency_key,
            user_id=request.user_id,
            image_refs=list(request.image_keys),
            payload=request.model_dump(mode="json"),
            queued_timeout_s=queued_timeout_s,
        )


def _job_row(live: LiveStack, job_id: UUID) -> tuple[Any, ...]:
    (row,) = live.sql(
        "SELECT status, user_id, payload, error_code, attempts, publish_count"
        " FROM jobs WHERE job_id = %s",
        job_id,
    )
    return row


def _wait_status(live: LiveStack, job_id: UUID, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = live.sql("SELECT status FROM jobs WHERE job_id = %s", job_id)
        if rows and str(rows[0][0]) in ("succeeded", "failed"):
            return str(rows[0][0])
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def _assert_worker_serves(live: LiveStack, faces: Path, pid: int) -> None:
    assert live.worker.is_alive() and live.worker.pid == pid
    job = live.client.wait(live.client.submit_inspection(_photo(faces)), timeout=60)
    assert job.status == "succeeded", job


def test_messages_that_are_not_task_envelopes_are_dead_lettered(
    live: LiveStack, faces: Path
) -> None:
    client = _redis(live)
    key = live.settings.dead_letter_key
    before = client.llen(key)
    pid = live.worker.pid
    queue = live.settings.queue_inference
    envelope = task_envelope("faceauth.nonexistent", kwargs={"payload": {}})
    pickled = task_envelope("faceauth.enroll", content_type="application/x-python-serialize")
    bad = [b"not json", b"[1,2,3]", b'{"a": 1}', b"\xff\x00", encode(envelope), encode(pickled)]
    for item in bad:
        client.lpush(queue, item)
    _assert_worker_serves(live, faces, pid)
    deadline = time.monotonic() + 30
    while client.llen(key) < before + len(bad) and time.monotonic() < deadline:
        time.sleep(0.1)
    letters = [json.loads(x) for x in client.lrange(key, 0, len(bad) - 1)]
    reasons = sorted(letter["reason"] for letter in letters)
    assert reasons == sorted(
        ["not_json", "not_an_envelope", "not_an_envelope", "not_utf8", "unknown_task",
         "content_type"]
    )  # fmt: skip
    assert all(letter["queue"] == queue for letter in letters)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [([], {}), ([], {"payload": {"user_id": "x", "image_keys": []}, "extra": 1}), ([1, 2], {})],
)
def test_wrong_task_arguments_fail_the_job_the_message_names(
    live: LiveStack, faces: Path, args: list[Any], kwargs: dict[str, Any]
) -> None:
    task_id = uuid4()
    live.client.celery.send_task(
        "faceauth.enroll", args=args, kwargs=kwargs, task_id=str(task_id),
        queue=live.settings.queue_inference,
    )  # fmt: skip
    assert _wait_status(live, task_id) == "failed"
    _status, user, payload, code, _attempts, _published = _job_row(live, task_id)
    assert (code, user, payload) == ("invalid_payload", None, {"invalid": True})


def test_a_message_cannot_take_over_another_job(live: LiveStack, faces: Path) -> None:
    victim = f"victim-{uuid4().hex[:6]}"
    request = EnrollRequest(
        job_id=uuid4(), user_id=victim, image_keys=[_upload(live, faces, victim)], liveness=False
    )
    _row_without_message(live, request, queued_timeout_s=3600)
    counts = live.table_counts()
    before = _job_row(live, request.job_id)  # type: ignore[arg-type]
    forged = request.model_copy(update={"user_id": "attacker"}).model_dump(mode="json")
    forged_task = uuid4()
    invalid_task = uuid4()
    send = live.client.celery.send_task
    queue = live.settings.queue_inference
    # A valid payload naming the victim's job, and an invalid one naming it.
    send("faceauth.enroll", kwargs={"payload": forged}, task_id=str(forged_task), queue=queue)
    send(
        "faceauth.enroll",
        kwargs={"payload": {"job_id": str(request.job_id), "user_id": "!", "image_keys": 3}},
        task_id=str(invalid_task),
        queue=queue,
    )
    # The same job id as task id with a different payload.
    send(
        "faceauth.enroll",
        kwargs={"payload": {**forged, "job_id": None}},
        task_id=str(request.job_id),
        queue=queue,
    )
    assert _wait_status(live, invalid_task) == "failed"  # recorded under its own id
    time.sleep(1.0)  # the forged messages were handled before the next inspect job
    _assert_worker_serves(live, faces, live.worker.pid)
    assert _job_row(live, request.job_id) == before  # type: ignore[arg-type]
    assert live.sql("SELECT count(*) FROM jobs WHERE job_id = %s", forged_task) == [(0,)]
    assert live.table_counts() == counts
    # The job's own message still runs it, for its own user.
    live.client.celery.send_task(
        "faceauth.enroll",
        kwargs={"payload": request.model_dump(mode="json", exclude_none=True)},
        task_id=str(request.job_id),
        queue=queue,
    )
    job = live.client.wait(request.job_id, timeout=60)  # type: ignore[arg-type]
    assert job.status == "succeeded" and job.user_id == victim
    assert live.sql("SELECT count(*) FROM users WHERE user_id = 'attacker'") == [(0,)]


def test_a_job_whose_message_was_lost_is_published_again(live: LiveStack, faces: Path) -> None:
    user = f"lost-{uuid4().hex[:6]}"
    request = EnrollRequest(
        job_id=uuid4(), user_id=user, image_keys=[_upload(live, faces, user)], liveness=False
    )
    _row_without_message(live, request, queued_timeout_s=0.5)
    job = live.client.wait(request.job_id, timeout=60)  # type: ignore[arg-type]
    assert job.status == JobStatus.SUCCEEDED
    _status, _user, _payload, _code, attempts, published = _job_row(live, request.job_id)  # type: ignore[arg-type]
    assert (attempts, published) == (1, 2)


def test_a_job_published_too_often_ends_with_its_own_code(live: LiveStack, faces: Path) -> None:
    user = f"undeliverable-{uuid4().hex[:6]}"
    request = EnrollRequest(
        job_id=uuid4(), user_id=user, image_keys=[_upload(live, faces, user)], liveness=False
    )
    _row_without_message(live, request, queued_timeout_s=3600)
    # As if every delivery so far had died: published the maximum number of times.
    live.sql(
        "UPDATE jobs SET status = 'running', publish_count = %s,"
        " lease_expires_at = now() - interval '1 second' WHERE job_id = %s RETURNING 1",
        live.settings.job_max_publishes,
        request.job_id,
    )
    job = live.client.wait(request.job_id, timeout=30)  # type: ignore[arg-type]
    assert job.status == "failed" and job.error is not None
    assert job.error["code"] == "delivery_attempts_exhausted"
    assert live.sql("SELECT count(*) FROM enrollments WHERE user_id = %s", user) == [(0,)]


def test_a_duplicate_message_does_not_run_a_job_another_delivery_holds(
    live: LiveStack, faces: Path
) -> None:
    user = f"leased-{uuid4().hex[:6]}"
    request = EnrollRequest(
        job_id=uuid4(), user_id=user, image_keys=[_upload(live, faces, user)], liveness=False
    )
    _row_without_message(live, request, queued_timeout_s=3600)
    with get_pool(live.settings).connection() as conn:  # another delivery holds a live lease
        state, _ = job_repo.claim_job(conn, request.job_id, owner=uuid4(), lease_s=3600)  # type: ignore[arg-type]
    assert state is job_repo.ClaimState.CLAIMED
    result = live.client.celery.send_task(
        "faceauth.enroll",
        kwargs={"payload": request.model_dump(mode="json", exclude_none=True)},
        task_id=str(request.job_id),
        queue=live.settings.queue_inference,
    ).get(timeout=60)
    assert result["status"] == "running"
    assert live.sql("SELECT count(*) FROM enrollments WHERE user_id = %s", user) == [(0,)]
    # The holder dies: its lease runs out and the reconciler hands the job to a worker.
    live.sql(
        "UPDATE jobs SET lease_expires_at = now() WHERE job_id = %s RETURNING 1", request.job_id
    )
    job = live.client.wait(request.job_id, timeout=60)  # type: ignore[arg-type]
    assert job.status == "succeeded"
    assert live.sql("SELECT count(*) FROM enrollments WHERE user_id = %s", user) == [(1,)]
