"""Context crops around a detected face, shared by liveness training and inference.

Training and serving must crop identically, or the model scores a different
picture from the one it learned on; so both import this one function.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

BBox = Sequence[float]  # x1, y1, x2, y2 in pixels
Shift = tuple[float, float]  # dx, dy as fractions of the (squared) box width and height

NO_SHIFT: Shift = (0.0, 0.0)


def scaled_box(
    image_w: int,
    image_h: int,
    bbox: BBox,
    scale: float,
    *,
    square: bool,
    shift: Shift = NO_SHIFT,
) -> tuple[int, int, int, int]:
    """Grow ``bbox`` about its centre by ``scale``, then shift (not shrink) it inside the image.

    ``shift`` first moves the centre by ``shift[0]`` box widths and ``shift[1]`` box heights
    (of the box after squaring, before scaling). It lets a model trained on one detector's
    boxes be fed the same pixels from another detector whose boxes sit elsewhere on the face
    (SCRFD's box reaches higher up the forehead than MediaPipe's, see training/liveness).

    This follows Silent-Face-Anti-Spoofing's ``CropImage._get_new_box``: the box keeps its
    size where it can and is slid back inside the frame, because padding with black would
    add an edge that neither live nor spoof photos have. When the grown box is larger than
    the image the scale is reduced so that it fits.
    """
    x1, y1, x2, y2 = (float(v) for v in bbox)
    box_w, box_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    if square:
        box_w = box_h = max(box_w, box_h)
    cx = (x1 + x2) / 2.0 + float(shift[0]) * box_w
    cy = (y1 + y2) / 2.0 + float(shift[1]) * box_h
    scale = min((image_h - 1) / box_h, (image_w - 1) / box_w, scale)
    new_w, new_h = box_w * scale, box_h * scale
    left, top = cx - new_w / 2.0, cy - new_h / 2.0
    right, bottom = cx + new_w / 2.0, cy + new_h / 2.0
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > image_w - 1:
        left -= right - image_w + 1
        right = image_w - 1
    if bottom > image_h - 1:
        top -= bottom - image_h + 1
        bottom = image_h - 1
    return int(left), int(top), int(right), int(bottom)


def crop_face(
    image: npt.NDArray[np.uint8],
    bbox: BBox,
    scale: float,
    out_size: tuple[int, int],
    *,
    square: bool,
    shift: Shift = NO_SHIFT,
) -> npt.NDArray[np.uint8]:
    """Crop the scaled box and resize it to ``out_size`` = (width, height); colour order kept.

    ``shift`` moves the box centre before scaling (see ``scaled_box``); the default is none.
    """
    h, w = image.shape[:2]
    left, top, right, bottom = scaled_box(w, h, bbox, scale, square=square, shift=shift)
    patch = image[top : bottom + 1, left : right + 1]
    if patch.size == 0:
        raise ValueError("face box lies outside the image")
    resized = cv2.resize(patch, out_size, interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized, dtype=np.uint8)
