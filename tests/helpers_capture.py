"""Capture problems made from the shared photos: masks, sunglasses, covered regions, shut eyes.

The shared ``faces/edge/mask_*.jpg`` files are flat pictures of surgical masks (InsightFace's
mask-rendering textures), not masked faces; here they are warped onto the lower half of
real faces. Positions are given in the 112x112 ArcFace template and mapped into the photo
with the inverse of the alignment the recogniser uses, so they follow the face's size,
position and roll.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from helpers_faces import EDGE_DIR

from workers.inference.face_mesh import MeshLandmarks

Image = npt.NDArray[np.uint8]
Points = npt.NDArray[np.float32]

MASK_FILES = tuple(sorted(EDGE_DIR.glob("mask_*.jpg")))
# Eye contours of the face mesh (subject's right, then left), for painting eyes shut.
_RIGHT_EYE_CONTOUR = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
_LEFT_EYE_CONTOUR = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
_DARK = (22, 20, 18)


def template_to_image(kps: Points, points_112: Sequence[Sequence[float]]) -> Points:
    """Template (112x112 aligned-face) coordinates -> coordinates in the photo."""
    from insightface.utils.face_align import estimate_norm

    inverse = cv2.invertAffineTransform(estimate_norm(np.asarray(kps, dtype=np.float32), 112))
    pts = np.asarray(points_112, dtype=np.float64)
    return np.asarray(pts @ inverse[:, :2].T + inverse[:, 2], dtype=np.float32)


def read_mask(path: Path) -> Image:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return np.ascontiguousarray(image)


def put_mask(image: Image, kps: Points, texture: Image) -> Image:
    """A surgical mask from the bridge of the nose to below the chin, ear to ear."""
    corners = template_to_image(kps, [[16, 60], [96, 60], [92, 122], [20, 122]])
    h, w = texture.shape[:2]
    source = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    warp = cv2.getPerspectiveTransform(source, corners)
    size = (image.shape[1], image.shape[0])
    warped = cv2.warpPerspective(texture, warp, size)
    inside = cv2.warpPerspective(np.full((h, w), 255, np.uint8), warp, size) > 0
    out = image.copy()
    out[inside] = warped[inside]
    return out


def put_sunglasses(image: Image, kps: Points) -> Image:
    """Two dark lenses over the eyes and a bridge between them."""
    right, left = template_to_image(kps, [[38.3, 52], [73.5, 52]])
    iod = float(np.linalg.norm(left - right))
    angle = float(np.degrees(np.arctan2(left[1] - right[1], left[0] - right[0])))
    out = image.copy()
    for centre in (right, left):
        axes = (int(0.42 * iod), int(0.3 * iod))
        cv2.ellipse(out, _int(centre), axes, angle, 0, 360, _DARK, -1, cv2.LINE_AA)
    cv2.line(out, _int(right), _int(left), _DARK, max(2, int(0.06 * iod)))
    return out


def cover(image: Image, kps: Points, box_112: tuple[float, float, float, float]) -> Image:
    """A flat grey card over a box of the template (a hand-held object, a scarf)."""
    x1, y1, x2, y2 = box_112
    corners = template_to_image(kps, [[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    out = image.copy()
    cv2.fillConvexPoly(out, corners.astype(np.int32), (128, 128, 128), cv2.LINE_AA)
    return out


def close_eyes(image: Image, mesh: MeshLandmarks) -> Image:
    """Paint the eyes shut: in-paint each eye opening from the lids, draw the lash line."""
    points = mesh.points[:, :2]
    iod = float(np.linalg.norm(points[33] - points[263]))
    out = image.copy()
    for contour, (outer, inner) in (
        (_RIGHT_EYE_CONTOUR, (33, 133)),
        (_LEFT_EYE_CONTOUR, (263, 362)),
    ):
        hole = np.zeros(image.shape[:2], np.uint8)
        cv2.fillPoly(hole, [points[list(contour)].astype(np.int32)], (255,))
        grown = cv2.dilate(hole, np.ones((3, 3), np.uint8), iterations=max(1, int(iod * 0.04)))
        hole = np.asarray(grown, dtype=np.uint8)
        out = np.asarray(cv2.inpaint(out, hole, 5, cv2.INPAINT_TELEA), dtype=np.uint8)
        a, b = points[outer], points[inner]
        middle = (a + b) / 2 + np.array([0.0, 0.02 * iod])
        lash = np.array([a, middle, b]).astype(np.int32)
        cv2.polylines(out, [lash], False, (40, 30, 30), max(1, int(iod * 0.025)), cv2.LINE_AA)
    return out


def rotate(image: Image, degrees_clockwise: float, centre: tuple[float, float]) -> Image:
    """The photo turned in its own plane about ``centre`` (content past the edges is grey)."""
    matrix = cv2.getRotationMatrix2D(centre, -degrees_clockwise, 1.0)
    size = (image.shape[1], image.shape[0])
    turned = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderValue=(128,) * 3)
    return np.asarray(turned, dtype=np.uint8)


def _int(point: npt.NDArray[np.float32]) -> tuple[int, int]:
    return round(float(point[0])), round(float(point[1]))
