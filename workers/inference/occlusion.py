"""What covers the face: skin-coloured share of the eye, nose and mouth regions.

The face is warped onto ArcFace's 112x112 template with the detector's five keypoints
(the very crop the recogniser sees), so each region sits at a fixed place whatever the
head's size, position or roll. In each region we count the pixels whose colour is skin:
a surgical or cloth mask, dark lenses or a hand-held card are not, and eyelids, the nose
and the skin around the mouth are.

The skin test is the classic YCrCb chroma box of Chai & Ngan (1999) (Cr 133-173,
Cb 77-127), opened on the saturated side to Cr <= 200 / Cb >= 60 (no mask colour lives
there, and a brightened dim face or warm light reaches it); it holds for light and dark
skin because it ignores luma. Pixels darker than luma 15 count as not skin (their chroma
is noise). A dim face is first brightened (gain up to 3, towards a median luma of 120),
since darkening pulls chroma towards grey with it.

Known limits: a skin-coloured occluder (a hand) reads as skin; a dense dark beard and a
washed-out face (a strong grey haze over the photo) read as not skin. Measured on the
shared photos, see tests/test_capture_quality.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

ImageBGR = npt.NDArray[np.uint8]

ALIGNED_SIDE = 112
# Regions of the aligned crop (x1, y1, x2, y2). The template puts the image-left eye at
# (38, 52), the image-right eye at (74, 52), the nose tip at (56, 72) and the mouth corners
# at (42, 92) and (71, 92). "Right" and "left" are the subject's own: the subject's right
# eye is on the image's left.
REGIONS: dict[str, tuple[int, int, int, int]] = {
    "right_eye": (26, 42, 50, 62),
    "left_eye": (62, 42, 86, 62),
    "nose": (48, 56, 64, 80),
    "mouth": (36, 84, 76, 112),  # the lips, the skin around them and the chin
}
_CR = (133, 200)
_CB = (60, 135)
_MIN_LUMA = 15
# Dim faces are brightened before the skin test (see _brightened), measured over the face
# part of the aligned crop.
_TARGET_LUMA = 120.0
_MAX_GAIN = 3.0
_FACE_ROWS, _FACE_COLS = slice(20, 112), slice(16, 96)


@dataclass(frozen=True)
class RegionSkin:
    """Share (0-1) of each region's pixels that are skin-coloured."""

    right_eye: float
    left_eye: float
    nose: float
    mouth: float


def skin_mask(image_bgr: ImageBGR) -> npt.NDArray[np.bool_]:
    """True where a pixel's chroma is skin's (see the module docstring)."""
    ycc = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2YCrCb)
    luma, cr, cb = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    return np.asarray(
        (cr >= _CR[0]) & (cr <= _CR[1]) & (cb >= _CB[0]) & (cb <= _CB[1]) & (luma >= _MIN_LUMA)
    )


def _brightened(aligned: ImageBGR) -> ImageBGR:
    """The aligned face with its median luma raised towards ``_TARGET_LUMA`` (gain <= 3).

    A dim photo shrinks chroma towards grey along with luma, out of the skin box; a gain
    puts it back (chroma scales with it). Pixels black before the gain stay black.
    """
    luma = cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY)
    median = float(np.median(luma[_FACE_ROWS, _FACE_COLS]))
    gain = min(max(_TARGET_LUMA / max(median, 1.0), 1.0), _MAX_GAIN)
    if gain == 1.0:
        return aligned
    out = np.clip(aligned.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    out[luma < _MIN_LUMA] = 0
    return out


def region_skin(image_bgr: ImageBGR, align: npt.NDArray[np.float64]) -> RegionSkin:
    """Skin share of the eye, nose and mouth regions of a face.

    ``align`` is the 2x3 similarity onto the 112x112 ArcFace template
    (``insightface.utils.face_align.estimate_norm`` of the face's keypoints), the
    transform ``norm_crop`` applies.
    """
    aligned = np.asarray(
        cv2.warpAffine(image_bgr, align, (ALIGNED_SIDE, ALIGNED_SIDE), borderValue=(0, 0, 0)),
        dtype=np.uint8,
    )
    skin = skin_mask(_brightened(aligned))
    shares = {name: float(skin[y1:y2, x1:x2].mean()) for name, (x1, y1, x2, y2) in REGIONS.items()}
    return RegionSkin(**shares)
