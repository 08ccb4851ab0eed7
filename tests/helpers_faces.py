"""Shared helpers for the face-stage tests: where ../shared is, the test pack, the photos.

The pack is loaded once per test session (a load takes a couple of seconds on CPU), the
way a worker process holds one.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from workers.inference.face_pack import FacePack

SHARED_DIR = Path(
    os.environ.get("FACEAUTH_SHARED_DIR") or Path(__file__).resolve().parents[1] / ".." / "shared"
).resolve()
FACE_PACK_DIR = SHARED_DIR / "models" / "facepack-test"
FACES_DIR = SHARED_DIR / "faces"
IDENTITIES_DIR = FACES_DIR / "identities"
GROUP_DIR = FACES_DIR / "group"
EDGE_DIR = FACES_DIR / "edge"
DETECTOR_FILE = "det_500m.onnx"
RECOGNIZER_FILE = "w128_mobilefacenet.onnx"

# Frontal portraits (judged by eye) used where a test needs a face looking at the camera.
FRONTAL_PHOTOS = (
    "obama/obama.jpg",
    "alex_lacamoire/img3.jpg",
    "rose_leslie/img2.jpg",
    "biden/biden2.jpg",
)


@functools.lru_cache(maxsize=1)
def shared_pack() -> FacePack:
    """The test pack, loaded once for the whole session."""
    return FacePack.load(FACE_PACK_DIR)


def read_bgr(path: Path) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return np.ascontiguousarray(image)


def identity_photos() -> list[tuple[str, Path]]:
    """(person, photo) for every photo under faces/identities, sorted."""
    return [
        (path.parent.name, path)
        for path in sorted(IDENTITIES_DIR.glob("*/*"))
        if path.suffix.lower() in {".jpg", ".jpeg", ".png"}
    ]
