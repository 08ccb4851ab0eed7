"""A first real job through S3 → Redis → Celery worker → Postgres, and bad input."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from uuid import uuid4

import pytest

from shared.schemas import JOBS, JobKind

from .conftest import LiveStack

pytestmark = pytest.mark.integration


def test_inspect_job_round_trip(live: LiveStack, faces: Path) -> None:
    photo = faces / "identities" / "obama" / "obama.jpg"
    job_id = live.client.submit_inspection(photo.read_bytes())
    job = live.client.wait(job_id, timeout=60)
    assert job.status == "succeeded", job.error
    assert job.kind is JobKind.INSPECT_IMAGE
    assert job.result is not None
    assert job.result["face_count"] == 1
    assert job.result["format"] == "jpeg"
    assert job.result["width"] > 100 and job.result["height"] > 100
    # The durable record is in Postgres, and it is the same as what the client read.
    rows = live.sql(
        "SELECT status, attempts, finished_at IS NOT NULL FROM jobs WHERE job_id = %s", job_id
    )
    assert rows == [("succeeded", 1, True)]


def test_group_photo_counts_every_face(live: LiveStack, faces: Path) -> None:
    job = live.client.wait(
        live.client.submit_inspection((faces / "group" / "t1.jpg").read_bytes()), 60
    )
    assert job.status == "succeeded"
    assert job.result is not None and job.result["face_count"] == 6


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares a huge canvas: the classic decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = zlib.compress(b"\x00" * 1024)
    idat_chunk = b"IDAT" + idat
    body += struct.pack(">I", len(idat)) + idat_chunk + struct.pack(">I", zlib.crc32(idat_chunk))
    return b"\x89PNG\r\n\x1a\n" + body


BAD_IMAGES = {
    "not_an_image": (b"%PDF-1.4 definitely not a photo" * 10, "image_undecodable"),
    "pixel_bomb": (_png_header_only(30000, 30000), "image_too_many_pixels"),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_bytes_fail_with_stable_code(live: LiveStack, name: str) -> None:
    data, code = BAD_IMAGES[name]
    before = live.table_counts()
    job = live.client.wait(live.client.submit_inspection(data), timeout=60)
    assert job.status == "failed"
    assert job.error is not None and job.error["code"] == code
    assert job.error["message"]
    assert job.attempts == 1  # failed once, never retried
    assert live.table_counts() == before


def test_truncated_jpeg_is_refused(live: LiveStack, faces: Path) -> None:
    data = (faces / "identities" / "biden" / "biden.jpg").read_bytes()
    job = live.client.wait(live.client.submit_inspection(data[: len(data) // 2]), timeout=60)
    assert job.status == "failed"
    assert job.error is not None and job.error["code"] == "image_truncated"


def test_oversize_object_is_refused_without_download(live: LiveStack) -> None:
    limit = live.settings.max_image_bytes
    key = live.client.upload_image(
        b"\xff\xd8\xff" + b"\x00" * (limit + 10), prefix="tests/oversize"
    )
    job = live.client.wait(live.client.submit_inspection(key), timeout=60)
    assert job.status == "failed"
    assert job.error is not None and job.error["code"] == "image_too_large"


def test_missing_object_fails_once(live: LiveStack) -> None:
    before = live.table_counts()
    job = live.client.wait(live.client.submit_inspection("nowhere/missing.jpg"), timeout=60)
    assert job.status == "failed"
    assert job.error is not None and job.error["code"] == "image_not_found"
    assert "nowhere/missing.jpg" in job.error["message"]
    assert job.attempts == 1
    assert live.table_counts() == before


@pytest.mark.parametrize(
    "payload",
    [
        {"image_key": 123},
        {"image_key": "a.jpg", "unexpected": True},
        "just a string",
        {"image_key": "../../etc/passwd"},
    ],
)
def test_malformed_payload_sent_by_name(live: LiveStack, payload: object) -> None:
    """A service without this package sends by task name; junk ends as invalid_payload."""
    task_id = str(uuid4())
    before = live.table_counts()
    live.client.celery.send_task(
        JOBS[JobKind.INSPECT_IMAGE].task_name, kwargs={"payload": payload}, task_id=task_id
    )
    from uuid import UUID

    job = live.client.wait(UUID(task_id), timeout=60)
    assert job.status == "failed"
    assert job.error is not None and job.error["code"] == "invalid_payload"
    assert live.table_counts() == before


def test_same_job_id_twice_yields_one_result(live: LiveStack, faces: Path) -> None:
    key = live.client.upload_image(
        (faces / "identities" / "obama" / "obama2.jpg").read_bytes(), prefix="tests"
    )
    job_id = live.client.submit_inspection(key)
    first = live.client.wait(job_id, timeout=60)
    # Redeliver the very same message (same task id = job id), as a broker might.
    payload = {"image_key": key, "job_id": str(job_id)}
    result = live.client.celery.send_task(
        JOBS[JobKind.INSPECT_IMAGE].task_name, kwargs={"payload": payload}, task_id=str(job_id)
    ).get(timeout=60)
    assert result["job_id"] == str(job_id)
    assert result["status"] == "succeeded"
    again = live.client.get_job(job_id)
    assert again is not None and again.attempts == first.attempts == 1
    assert live.sql("SELECT count(*) FROM jobs WHERE job_id = %s", job_id) == [(1,)]


def test_idempotency_key_returns_first_job(live: LiveStack, faces: Path) -> None:
    data = (faces / "identities" / "biden" / "biden2.jpg").read_bytes()
    key = f"inspect-{uuid4()}"
    first = live.client.submit_inspection(data, idempotency_key=key)
    second = live.client.submit_inspection(data, idempotency_key=key)
    assert first == second
    assert live.client.wait(first, timeout=60).status == "succeeded"
    assert live.sql("SELECT count(*) FROM jobs WHERE idempotency_key = %s", key) == [(1,)]
