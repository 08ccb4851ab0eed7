"""Box calibration: where the serving detector's face box sits relative to the training one.

The liveness model is trained on crops around MediaPipe BlazeFace boxes (the design card asks
for MediaPipe), but the workers crop around the SCRFD boxes of the InsightFace face pack.
SCRFD's box is taller (it reaches up the forehead): on the shared photos its square side is
about 1.25x MediaPipe's and its centre about 0.1 side higher. Serving with the training
``crop_scale`` would therefore show the model about 1.5x the area, shifted up, that it learned
on. Running both detectors on the training images measures that mapping, and the exported
spec carries the serving crop (scale and centre shift) that shows the same pixels again.

No torch here; the face pack (ONNX Runtime) is imported only when a pack is loaded.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from shared.config import get_settings

if TYPE_CHECKING:
    from workers.inference.face_pack import FacePack

log = logging.getLogger(__name__)

CALIBRATION_FORMAT = "faceauth-liveness-boxcal/1"
# Two detectors' boxes of one face overlap at IoU ~0.65-0.75 on the shared photos (SCRFD's
# is taller); different faces overlap at ~0. 0.3 separates the two with room either side.
MIN_MATCH_IOU = 0.3
# Fewer matched faces than this give a median that one odd photo can move: say so.
FEW_FACES = 20

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
Shift = tuple[float, float]


class ServingBoxDetector(Protocol):
    """The serving face detector, as far as calibration needs it."""

    @property
    def version(self) -> str:
        """Identifies the detector's weights (recorded in the spec)."""
        ...

    @property
    def cache_tag(self) -> str:
        """Everything that changes its boxes; part of the calibration cache key."""
        ...

    def boxes(self, image_bgr: npt.NDArray[np.uint8]) -> list[Box]:
        """Face boxes of a BGR image, as serving would get them."""
        ...


class FacePackBoxDetector:
    """The workers' own ``FacePack`` detector, with serving's input size and threshold."""

    def __init__(self, pack: FacePack) -> None:
        from workers.inference.face_pack import DEFAULT_DET_THRESHOLD

        self._pack = pack
        self._tag = (
            f"{CALIBRATION_FORMAT}|serving={pack.model_version}|det_size={pack.det_size}"
            f"|thresh={DEFAULT_DET_THRESHOLD}|iou={MIN_MATCH_IOU}"
        )

    @classmethod
    def load(cls, pack_dir: Path, *, det_size: int | None = None) -> FacePackBoxDetector:
        """Load the pack in ``pack_dir`` at serving's ``face_det_size`` unless told otherwise."""
        from workers.inference.face_pack import FacePack

        size = det_size if det_size is not None else get_settings().face_det_size
        return cls(FacePack.load(pack_dir, det_size=size))

    @property
    def version(self) -> str:
        return self._pack.model_version

    @property
    def det_size(self) -> int:
        return self._pack.det_size

    @property
    def cache_tag(self) -> str:
        return self._tag

    def boxes(self, image_bgr: npt.NDArray[np.uint8]) -> list[Box]:
        return [face.bbox for face in self._pack.detect(image_bgr)]


def square_side(box: Sequence[float]) -> float:
    """The side of the square both crop paths make of ``box`` (``square=True``)."""
    return max(float(box[2]) - float(box[0]), float(box[3]) - float(box[1]), 1.0)


def centre(box: Sequence[float]) -> tuple[float, float]:
    return (float(box[0]) + float(box[2])) / 2.0, (float(box[1]) + float(box[3])) / 2.0


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class BoxMatch:
    """One face: the serving detector's box measured against the training detector's."""

    ratio: float  # serving square side / training square side
    dx: float  # (serving centre - training centre) / training side
    dy: float
    iou: float  # of the two raw boxes

    @property
    def serving_shift(self) -> Shift:
        """The centre move, in serving box sides, that lands on the training box centre."""
        return -self.dx / self.ratio, -self.dy / self.ratio

    def to_meta(self) -> dict[str, float]:
        return {"ratio": self.ratio, "dx": self.dx, "dy": self.dy, "iou": self.iou}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> BoxMatch:
        return cls(float(meta["ratio"]), float(meta["dx"]), float(meta["dy"]), float(meta["iou"]))


def match_box(
    train_box: Sequence[float], serving_boxes: Sequence[Sequence[float]]
) -> BoxMatch | None:
    """Measure the serving box of the training face (best IoU, above ``MIN_MATCH_IOU``).

    The best-overlapping serving box rather than the serving detector's largest: in a group
    photo the two detectors may rank faces differently, and the overlap test alone tells
    whether two boxes are the same face.
    """
    if not serving_boxes:
        return None
    best = max(serving_boxes, key=lambda b: iou(train_box, b))
    overlap = iou(train_box, best)
    if overlap <= MIN_MATCH_IOU:
        return None
    side = square_side(train_box)
    (tx, ty), (sx, sy) = centre(train_box), centre(best)
    return BoxMatch(square_side(best) / side, (sx - tx) / side, (sy - ty) / side, overlap)


def square_iou(centre_a: Shift, side_a: float, centre_b: Shift, side_b: float) -> float:
    """IoU of two axis-aligned squares given by centre and side."""
    ix = max(
        0.0,
        min(centre_a[0] + side_a / 2, centre_b[0] + side_b / 2)
        - max(centre_a[0] - side_a / 2, centre_b[0] - side_b / 2),
    )
    iy = max(
        0.0,
        min(centre_a[1] + side_a / 2, centre_b[1] + side_b / 2)
        - max(centre_a[1] - side_a / 2, centre_b[1] - side_b / 2),
    )
    inter = ix * iy
    return inter / (side_a**2 + side_b**2 - inter)


def crop_iou(match: BoxMatch, train_scale: float, serving_scale: float, shift: Shift) -> float:
    """IoU of the training crop and the serving crop of one face, away from image borders.

    In training-box units: the training crop is a square of side ``train_scale`` at the
    origin; the serving crop has side ``serving_scale * ratio`` at the serving box centre
    moved by ``shift`` serving sides.
    """
    moved = (match.dx + shift[0] * match.ratio, match.dy + shift[1] * match.ratio)
    return square_iou((0.0, 0.0), train_scale, moved, serving_scale * match.ratio)


@dataclass(frozen=True)
class BoxCalibration:
    """The serving crop that shows the model the pixels it was trained on, and the evidence."""

    serving_detector: str
    train_detector: str
    serving_det_size: int
    n_faces: int
    n_unmatched: int
    median_ratio: float
    p10_ratio: float
    p90_ratio: float
    median_shift: Shift  # (dx, dy): serving minus training box centre, in training sides
    train_crop_scale: float
    serving_crop_scale: float
    serving_crop_shift: Shift  # in serving box sides, as LivenessMember.crop_shift
    median_crop_iou: float  # training vs calibrated serving crop, over the matched faces
    median_crop_iou_uncalibrated: float  # ... vs the serving crop with the training scale

    def to_dict(self) -> dict[str, Any]:
        return {
            "serving_detector": self.serving_detector,
            "train_detector": self.train_detector,
            "serving_det_size": self.serving_det_size,
            "n_faces": self.n_faces,
            "n_unmatched": self.n_unmatched,
            "median_ratio": self.median_ratio,
            "p10_ratio": self.p10_ratio,
            "p90_ratio": self.p90_ratio,
            "median_shift": list(self.median_shift),
            "train_crop_scale": self.train_crop_scale,
            "serving_crop_scale": self.serving_crop_scale,
            "serving_crop_shift": list(self.serving_crop_shift),
            "median_crop_iou": self.median_crop_iou,
            "median_crop_iou_uncalibrated": self.median_crop_iou_uncalibrated,
        }


def calibrate(
    matches: Sequence[BoxMatch],
    *,
    n_unmatched: int,
    train_crop_scale: float,
    serving_detector: str,
    train_detector: str,
    serving_det_size: int,
) -> BoxCalibration | None:
    """Summarise per-face matches; None (with a warning) when no face matched at all."""
    if not matches:
        log.warning(
            "box calibration: the serving detector %s matched none of the %d usable faces",
            serving_detector,
            n_unmatched,
        )
        return None
    if len(matches) < FEW_FACES:
        log.warning(
            "box calibration from only %d face(s): the serving crop is a rough estimate",
            len(matches),
        )
    ratios = [m.ratio for m in matches]
    p10, p90 = (float(v) for v in np.percentile(ratios, [10, 90]))
    median_ratio = float(statistics.median(ratios))
    serving_scale = train_crop_scale / median_ratio
    # Per-face shifts in serving units, then the median: dividing the median offset by the
    # median ratio would mix two different faces' numbers.
    shift = (
        float(statistics.median(m.serving_shift[0] for m in matches)),
        float(statistics.median(m.serving_shift[1] for m in matches)),
    )
    return BoxCalibration(
        serving_detector=serving_detector,
        train_detector=train_detector,
        serving_det_size=serving_det_size,
        n_faces=len(matches),
        n_unmatched=n_unmatched,
        median_ratio=median_ratio,
        p10_ratio=p10,
        p90_ratio=p90,
        median_shift=(
            float(statistics.median(m.dx for m in matches)),
            float(statistics.median(m.dy for m in matches)),
        ),
        train_crop_scale=train_crop_scale,
        serving_crop_scale=serving_scale,
        serving_crop_shift=shift,
        median_crop_iou=float(
            statistics.median(crop_iou(m, train_crop_scale, serving_scale, shift) for m in matches)
        ),
        median_crop_iou_uncalibrated=float(
            statistics.median(
                crop_iou(m, train_crop_scale, train_crop_scale, (0.0, 0.0)) for m in matches
            )
        ),
    )


def serving_crop(
    train_crop_scale: float, calibration: BoxCalibration | None
) -> tuple[float, Shift]:
    """(crop_scale, crop_shift) for the exported member; the training crop when uncalibrated."""
    if calibration is None:
        log.warning(
            "no box calibration (no serving face pack given, or no face matched): exporting "
            "crop_scale %.3f around the training detector's box; the serving crop may differ "
            "from the training crop (SCRFD boxes are ~1.25x MediaPipe's), pass "
            "--serving-face-pack to calibrate",
            train_crop_scale,
        )
        return train_crop_scale, (0.0, 0.0)
    return calibration.serving_crop_scale, calibration.serving_crop_shift
