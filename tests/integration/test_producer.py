"""The producer client under concurrency and database restarts."""

from __future__ import annotations

import threading
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from shared.producer import FaceauthClient

from .conftest import LiveStack

pytestmark = pytest.mark.integration


def _photo(faces: Path) -> bytes:
    return sorted((faces / "identities" / "rose_leslie").iterdir())[0].read_bytes()


def test_a_known_idempotency_key_uploads_nothing(live: LiveStack, faces: Path) -> None:
    user = f"idem-{uuid4().hex[:6]}"
    key = f"signup-{uuid4().hex}"
    first = live.client.submit_enrollment(user, [_photo(faces)], idempotency_key=key)
    uploaded = live.client.store.list_keys(f"enroll/{user}/")
    again = live.client.submit_enrollment(user, [_photo(faces)], idempotency_key=key)
    assert again == first
    assert live.client.store.list_keys(f"enroll/{user}/") == uploaded
    assert live.client.wait(first, timeout=60).status == "succeeded"


def test_concurrent_producers_with_one_key_make_one_job_and_leave_no_stray_upload(
    live: LiveStack, faces: Path
) -> None:
    user = f"race-{uuid4().hex[:6]}"
    key = f"signup-{uuid4().hex}"
    photo = _photo(faces)
    barrier = threading.Barrier(20)
    results: list[UUID] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            client = FaceauthClient(live.settings)
            barrier.wait()
            results.append(client.submit_enrollment(user, [photo], idempotency_key=key))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(results) == 20 and len(set(results)) == 1
    job = live.client.wait(results[0], timeout=60)
    assert job.status == "succeeded"
    (refs,) = live.sql("SELECT image_refs FROM jobs WHERE job_id = %s", results[0])
    assert live.client.store.list_keys(f"enroll/{user}/") == refs[0]


def test_the_producer_survives_a_database_restart(live: LiveStack, faces: Path) -> None:
    client = FaceauthClient(live.settings)
    first = client.wait(client.submit_inspection(_photo(faces)), timeout=60)
    assert first.status == "succeeded"
    live.stack.restart_postgres()  # every pooled connection is now closed by the server
    again = client.wait(client.submit_inspection(_photo(faces)), timeout=60)
    assert again.status == "succeeded"
