"""Enrollment through the real queue, database and models, on real photos."""

from __future__ import annotations

import time
from pathlib import Path
from uuid import uuid4

import cv2
import numpy as np
import pytest

from shared.schemas import JobView

from .conftest import LiveStack

pytestmark = pytest.mark.integration

PEOPLE = ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]


def photos(faces: Path, person: str) -> list[Path]:
    return sorted((faces / "identities" / person).iterdir())


def enroll(live: LiveStack, user: str, images: list[bytes | str], **kw: object) -> JobView:
    return live.client.wait(live.client.submit_enrollment(user, images, **kw), timeout=120)  # type: ignore[arg-type]


def encode(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def reason_codes(job: JobView) -> set[str]:
    assert job.result is not None
    images = job.result.get("details", {}).get("images") or job.result.get("images")
    return {r["code"] for img in images for r in img["reasons"]}


@pytest.mark.parametrize("person", PEOPLE)
def test_each_person_enrolls(live: LiveStack, faces: Path, person: str) -> None:
    files = photos(faces, person)
    user = f"{person}-{uuid4().hex[:6]}"
    job = enroll(live, user, [p.read_bytes() for p in files])
    assert job.status == "succeeded", job.result
    result = job.result
    assert result is not None
    assert result["embedding_dim"] == 128  # from the model, not a constant
    assert len(result["templates"]) == len(files) + 1
    assert sum(t["is_mean_template"] for t in result["templates"]) == 1
    assert min(result["mean_similarity_to_sources"]) > 0.8
    assert result["liveness"]["checked"] is True
    rows = live.sql(
        "SELECT is_mean_template, model_name, model_version, vector_dims(embedding),"
        " quality ? 'blur', source_image_key IS NOT NULL,"
        " round((embedding <#> embedding)::numeric, 3)"
        " FROM templates WHERE user_id = %s AND is_active ORDER BY is_mean_template",
        user,
    )
    assert len(rows) == len(files) + 1
    for is_mean, name, version, dims, has_blur, has_key, neg_norm2 in rows:
        assert name == "facepack-test" and version == result["model_version"] and dims == 128
        assert float(neg_norm2) == -1.0  # L2-normalised: <x,x> = 1
        assert has_blur == (not is_mean) and has_key == (not is_mean)
    audit = live.sql("SELECT event FROM audit_log WHERE job_id = %s", job.job_id)
    assert audit == [("enrolled",)]


def test_reenrollment_replaces_and_keeps_old_inactive(live: LiveStack, faces: Path) -> None:
    user = f"reenroll-{uuid4().hex[:6]}"
    first, second = photos(faces, "obama")[:2]
    assert enroll(live, user, [first.read_bytes()]).status == "succeeded"
    assert enroll(live, user, [second.read_bytes()]).status == "succeeded"
    rows = live.sql(
        "SELECT is_active, count(*) FROM templates WHERE user_id = %s"
        " GROUP BY is_active ORDER BY 1",
        user,
    )
    assert rows == [(False, 2), (True, 2)]


def test_group_photo_is_rejected_for_multiple_faces(live: LiveStack, faces: Path) -> None:
    before = live.table_counts()
    job = enroll(
        live, f"group-{uuid4().hex[:6]}", [(faces / "group" / "obama_and_biden.jpg").read_bytes()]
    )
    assert job.status == "failed"
    assert job.error is not None and job.error["code"] == "quality_rejected"
    assert "multiple_faces" in reason_codes(job)
    assert live.table_counts() == before


def test_mixed_identities_are_rejected(live: LiveStack, faces: Path) -> None:
    before = live.table_counts()
    images = [photos(faces, "obama")[0].read_bytes(), photos(faces, "biden")[0].read_bytes()]
    job = enroll(live, f"mixed-{uuid4().hex[:6]}", images)
    assert job.status == "failed"
    assert job.error is not None and job.error["code"] == "mixed_identities"
    assert job.result is not None
    assert job.result["details"]["pair_similarities"][0]["similarity"] < 0.3
    assert live.table_counts() == before


@pytest.mark.parametrize(("count", "code"), [(0, "too_few_images"), (4, "too_many_images")])
def test_image_count_limits(live: LiveStack, faces: Path, count: int, code: str) -> None:
    files = [p for person in PEOPLE for p in photos(faces, person)][:count]
    job = enroll(live, f"count-{uuid4().hex[:6]}", [p.read_bytes() for p in files])
    assert job.status == "failed"
    assert job.error is not None and job.error["code"] == code


def _synthetic(faces: Path) -> dict[str, tuple[bytes, str]]:
    img = cv2.imread(str(faces / "identities" / "obama" / "obama.jpg"))
    h, w = img.shape[:2]
    tiny = cv2.resize(img, (w // 6, h // 6), interpolation=cv2.INTER_AREA)
    return {
        "dark": (encode((img * 0.05).astype(np.uint8)), "too_dark"),
        "blurred": (encode(cv2.GaussianBlur(img, (0, 0), 12)), "too_blurry"),
        "tiny": (encode(tiny), "face_too_small"),
        "bright": (encode(np.clip(img * 0.1 + 225, 0, 255).astype(np.uint8)), "too_bright"),
    }


@pytest.mark.parametrize("variant", ["dark", "blurred", "tiny", "bright"])
def test_degraded_photo_gets_matching_reason(live: LiveStack, faces: Path, variant: str) -> None:
    data, expected = _synthetic(faces)[variant]
    job = enroll(live, f"{variant}-{uuid4().hex[:6]}", [data])
    assert job.status == "failed"
    codes = reason_codes(job)
    assert expected in codes or (variant == "tiny" and "no_face" in codes), codes
    images = job.result["details"]["images"]  # type: ignore[index]
    reason = (
        next(r for r in images[0]["reasons"] if r["code"] == expected)
        if expected in codes
        else None
    )
    if reason is not None and reason.get("threshold") is not None:
        assert reason["value"] is not None and reason["message"]


def test_edge_photos(live: LiveStack, faces: Path) -> None:
    """Every edge photo gets the verdict its content calls for, with the right reason."""
    outcomes: dict[str, tuple[str, set[str]]] = {}
    for path in sorted((faces / "edge").iterdir()):
        job = enroll(live, f"edge-{uuid4().hex[:6]}", [path.read_bytes()])
        codes = reason_codes(job) if job.status == "failed" else set()
        outcomes[path.name] = (str(job.status), codes)
    expected = {
        # 52 px wide face in a 240p frame: below the 90 px minimum.
        "obama-240p.jpg": ("failed", {"face_too_small"}),
        # A small file, but the face itself is 106 px wide and sharp: it passes.
        "obama_small.jpg": ("succeeded", set()),
        # Half the face lies outside the frame: the aligned crop would be padded.
        "obama_partial_face.jpg": ("failed", {"face_truncated"}),
        "obama_partial_face2.jpg": ("failed", {"face_truncated"}),
        # RGBA PNG: alpha is dropped at decode, the face is fine.
        "32bit.png": ("succeeded", set()),
        # The lightweight test detector finds no face under a surgical mask.
        "mask_black.jpg": ("failed", {"no_face"}),
        "mask_blue.jpg": ("failed", {"no_face"}),
        "mask_green.jpg": ("failed", {"no_face"}),
        "mask_white.jpg": ("failed", {"no_face"}),
    }
    for name, (status, codes) in expected.items():
        got_status, got_codes = outcomes[name]
        assert got_status == status, (name, outcomes[name])
        assert codes <= got_codes, (name, outcomes[name])


def test_worker_killed_mid_enrollment_leaves_all_or_nothing(live: LiveStack, faces: Path) -> None:
    user = f"crash-{uuid4().hex[:6]}"
    files = photos(faces, "alex_lacamoire")
    job_id = live.client.submit_enrollment(user, [p.read_bytes() for p in files])
    # Kill the worker (SIGKILL, no cleanup) as soon as it has claimed the job.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = live.client.get_job(job_id)
        if job is not None and job.status != "queued":
            break
        time.sleep(0.01)
    live.worker.kill()
    rows = live.sql("SELECT count(*) FROM templates WHERE user_id = %s", user)[0][0]
    assert rows in (0, len(files) + 1)
    live.restart_worker()
    job = live.client.wait(job_id, timeout=120)
    assert job.status == "succeeded"
    assert live.sql("SELECT count(*) FROM templates WHERE user_id = %s", user) == [
        (len(files) + 1,)
    ]
    assert live.sql("SELECT count(*) FROM enrollments WHERE user_id = %s", user) == [(1,)]
