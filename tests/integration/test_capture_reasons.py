"""Capture reasons a person can act on (mask, sunglasses, eyes closed) through the real jobs.

Enrollment, verification and the quality-scan job all run the worker's quality gate; each
must hand back the coded reason with its value and threshold.
"""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import cv2
import numpy as np
import pytest
from helpers_capture import close_eyes, put_mask, put_sunglasses, read_mask
from helpers_faces import read_bgr, shared_pack

from workers.inference.face_mesh import get_face_mesh

from .conftest import LiveStack

pytestmark = pytest.mark.integration


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def _reasons(images: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(r["code"]): r for img in images for r in img["reasons"]}  # type: ignore[attr-defined]


def test_enrollment_verification_and_scan_return_capture_reasons(
    live: LiveStack, faces: Path
) -> None:
    portrait = read_bgr(faces / "identities" / "obama" / "obama.jpg")
    (face,) = shared_pack().detect(portrait)
    masked = _jpeg(put_mask(portrait, face.kps, read_mask(faces / "edge" / "mask_blue.jpg")))
    shaded = _jpeg(put_sunglasses(portrait, face.kps))
    mesh = get_face_mesh()
    assert mesh is not None
    landmarks = mesh.landmarks(portrait, face.bbox)
    assert landmarks is not None
    shut = _jpeg(close_eyes(portrait, landmarks))

    # Enrollment of a masked photo fails, naming the mask with value and threshold.
    user = f"capture-{uuid4().hex[:6]}"
    job = live.client.wait(live.client.submit_enrollment(user, [masked]), timeout=120)
    assert job.status == "failed" and job.result is not None
    mask = _reasons(job.result["details"]["images"])["mask"]
    assert float(mask["value"]) < float(mask["threshold"]) == 0.4  # type: ignore[arg-type]
    assert "mouth covered" in str(mask["message"])

    # A clean enrollment, then a verification probe behind sunglasses: quality_failed.
    clean = (faces / "identities" / "obama" / "obama.jpg").read_bytes()
    enrolled = live.client.wait(
        live.client.submit_enrollment(user, [clean], liveness=False), timeout=120
    )
    assert enrolled.status == "succeeded", enrolled.result
    verdict = live.client.wait(
        live.client.submit_verification(user, shaded, liveness=False), timeout=120
    )
    assert verdict.result is not None
    assert verdict.result["decision"] == "quality_failed", verdict.result
    codes = {r["code"] for r in verdict.result["reasons"]}
    assert "sunglasses" in codes, verdict.result["reasons"]

    # The quality-scan job: one row per image, with the reason codes.
    scan = live.client.wait(live.client.submit_quality_scan([shut, masked, shaded]), timeout=120)
    assert scan.status == "succeeded" and scan.result is not None
    rows = scan.result["rows"]
    assert [set(row["reasons"].split(";")) for row in rows] == [
        {"eyes_closed"},
        {"mask"},
        {"sunglasses"},
    ]
    assert rows[0]["pose_source"] == "face_mesh" and rows[0]["eye_aspect_ratio"] < 0.16
