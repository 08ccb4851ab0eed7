"""Quality metrics of a detected face and the gate that accepts or refuses it.

The thresholds are the enrollment prototype's (see ``shared.config.Settings``): exactly
one face, detector score >= 0.5, box >= 90 px wide, Laplacian variance >= 8 on the face,
mean face brightness 25-235, face box >= 2% of the image, and optionally |yaw| <= 30°,
|pitch| <= 20°. Every failing check is reported, each with a stable code
(``shared.quality_codes``), the measured value and the threshold, so a client can tell
the user everything to fix at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from shared.config import Settings, get_settings
from shared.quality_codes import QualityReasonCode
from workers.inference.face_pack import DetectedFace
from workers.inference.pose import PoseSource, pose_from_5_points

ImageBGR = npt.NDArray[np.uint8]

# Metrics are reported (and gated) at this many decimals: enough for any threshold, and a
# stored quality record does not carry float noise.
_DECIMALS = 4


class QualityMetrics(BaseModel):
    """Measurements of one face. Pixel sizes refer to the image as decoded."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    det_score: float
    bbox_width: float
    bbox_height: float
    # Detector box area / image area (the box may reach past the image edge).
    face_area_ratio: float
    # Variance of the Laplacian of the grey face region (box clipped to the image).
    blur: float
    # Mean grey level (0-255) of the same region.
    brightness: float
    yaw: float
    pitch: float
    roll: float
    pose_source: PoseSource
    image_width: int
    image_height: int
    # Share of the 112x112 ArcFace-aligned crop whose pixels come from inside the image:
    # below 1 the recogniser would see black padding where part of the face should be.
    aligned_crop_coverage: float = 1.0


class QualityReason(BaseModel):
    """One failed check: ``code`` for programs, ``message`` for people."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    code: QualityReasonCode
    value: float | None = None
    threshold: float | None = None
    message: str


class QualityVerdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool
    reasons: list[QualityReason]


class ImageAssessment(BaseModel):
    """A whole image: how many faces, and for exactly one, its metrics and verdict."""

    model_config = ConfigDict(frozen=True)

    face_count: int
    passed: bool
    reasons: list[QualityReason]
    metrics: QualityMetrics | None = None


class QualityThresholds(BaseModel):
    """The gate's limits, copied from settings (recorded with scan results)."""

    model_config = ConfigDict(frozen=True)

    min_det_score: float
    min_face_width_px: float
    min_blur_variance: float
    min_brightness: float
    max_brightness: float
    min_face_area_ratio: float
    pose_gate_enabled: bool
    max_abs_yaw_deg: float
    max_abs_pitch_deg: float
    min_aligned_crop_coverage: float = 0.9

    @classmethod
    def from_settings(cls, settings: Settings) -> QualityThresholds:
        return cls(
            min_det_score=settings.min_det_score,
            min_face_width_px=settings.min_face_width_px,
            min_blur_variance=settings.min_blur_variance,
            min_brightness=settings.min_brightness,
            max_brightness=settings.max_brightness,
            min_face_area_ratio=settings.min_face_area_ratio,
            pose_gate_enabled=settings.pose_gate_enabled,
            max_abs_yaw_deg=settings.max_abs_yaw_deg,
            max_abs_pitch_deg=settings.max_abs_pitch_deg,
            min_aligned_crop_coverage=settings.min_aligned_crop_coverage,
        )


def measure_quality(image_bgr: ImageBGR, face: DetectedFace) -> QualityMetrics:
    """Blur, brightness, size and pose of ``face`` in ``image_bgr``."""
    height, width = image_bgr.shape[:2]
    x1, y1, x2, y2 = face.bbox
    left, top = max(0, math.floor(x1)), max(0, math.floor(y1))
    right, bottom = min(width, math.ceil(x2)), min(height, math.ceil(y2))
    region = image_bgr[top:bottom, left:right]
    if region.size == 0:
        # A box wholly outside the image (never seen from SCRFD): nothing to measure, and
        # zeros fail the blur and brightness checks rather than passing silently.
        blur = brightness = 0.0
    else:
        grey = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
        blur = float(cv2.Laplacian(grey, cv2.CV_64F).var())
        brightness = float(grey.mean())
    pose = face.pose if face.pose is not None else pose_from_5_points(face.kps)
    return QualityMetrics(
        det_score=_r(face.det_score),
        bbox_width=_r(x2 - x1),
        bbox_height=_r(y2 - y1),
        face_area_ratio=_r(max(x2 - x1, 0.0) * max(y2 - y1, 0.0) / float(width * height)),
        blur=_r(blur),
        brightness=_r(brightness),
        yaw=_r(pose.yaw),
        pitch=_r(pose.pitch),
        roll=_r(pose.roll),
        pose_source=pose.source,
        image_width=int(width),
        image_height=int(height),
        aligned_crop_coverage=_r(aligned_crop_coverage(image_bgr.shape[:2], face.kps)),
    )


def aligned_crop_coverage(image_hw: tuple[int, ...], kps: npt.NDArray[np.float32]) -> float:
    """Fraction of the ArcFace-aligned 112x112 crop that lies inside the image.

    A face cut by the frame edge can still be detected (its landmarks are extrapolated),
    but its aligned crop is partly black; the similarity transform is the very one
    ``norm_crop`` uses, so this measures exactly what the recogniser would be fed.
    """
    from insightface.utils.face_align import estimate_norm

    matrix = estimate_norm(np.asarray(kps, dtype=np.float32), 112)
    inside = np.ones((int(image_hw[0]), int(image_hw[1])), dtype=np.uint8)
    return float(cv2.warpAffine(inside, matrix, (112, 112), flags=cv2.INTER_NEAREST).mean())


class QualityGate:
    """Accepts or refuses one face's metrics against the configured thresholds."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._thresholds = QualityThresholds.from_settings(settings or get_settings())

    @property
    def thresholds(self) -> QualityThresholds:
        return self._thresholds

    def evaluate(self, metrics: QualityMetrics) -> QualityVerdict:
        """Every failed check, in a fixed order; passed when there is none."""
        t = self._thresholds
        reasons: list[QualityReason] = []

        def fail(code: QualityReasonCode, value: float, threshold: float, message: str) -> None:
            reasons.append(
                QualityReason(code=code, value=value, threshold=threshold, message=message)
            )

        if metrics.det_score < t.min_det_score:
            fail(
                QualityReasonCode.LOW_DETECTION_SCORE,
                metrics.det_score,
                t.min_det_score,
                f"face not clearly detected: detection score {metrics.det_score:.2f} "
                f"< {t.min_det_score:g}",
            )
        if metrics.bbox_width < t.min_face_width_px:
            fail(
                QualityReasonCode.FACE_TOO_SMALL,
                metrics.bbox_width,
                t.min_face_width_px,
                f"face too small: {metrics.bbox_width:.0f} px wide < {t.min_face_width_px:g} px",
            )
        if metrics.face_area_ratio < t.min_face_area_ratio:
            fail(
                QualityReasonCode.FACE_AREA_TOO_SMALL,
                metrics.face_area_ratio,
                t.min_face_area_ratio,
                f"face too small in the frame: {metrics.face_area_ratio:.2%} of the image "
                f"< {t.min_face_area_ratio:.2%}",
            )
        if metrics.aligned_crop_coverage < t.min_aligned_crop_coverage:
            fail(
                QualityReasonCode.FACE_TRUNCATED,
                metrics.aligned_crop_coverage,
                t.min_aligned_crop_coverage,
                f"face cut off by the image edge: {metrics.aligned_crop_coverage:.0%} of the "
                f"aligned face lies inside the photo < {t.min_aligned_crop_coverage:.0%}",
            )
        if metrics.blur < t.min_blur_variance:
            fail(
                QualityReasonCode.TOO_BLURRY,
                metrics.blur,
                t.min_blur_variance,
                f"image too blurry: Laplacian variance {metrics.blur:.1f} "
                f"< {t.min_blur_variance:g}",
            )
        if metrics.brightness < t.min_brightness:
            fail(
                QualityReasonCode.TOO_DARK,
                metrics.brightness,
                t.min_brightness,
                f"image too dark: mean brightness {metrics.brightness:.1f} < {t.min_brightness:g}",
            )
        if metrics.brightness > t.max_brightness:
            fail(
                QualityReasonCode.TOO_BRIGHT,
                metrics.brightness,
                t.max_brightness,
                f"image too bright: mean brightness {metrics.brightness:.1f} "
                f"> {t.max_brightness:g}",
            )
        if t.pose_gate_enabled:
            if abs(metrics.yaw) > t.max_abs_yaw_deg:
                fail(
                    QualityReasonCode.YAW_OUT_OF_RANGE,
                    metrics.yaw,
                    t.max_abs_yaw_deg,
                    f"head turned too far sideways: yaw {metrics.yaw:.1f}° "
                    f"(limit ±{t.max_abs_yaw_deg:g}°)",
                )
            if abs(metrics.pitch) > t.max_abs_pitch_deg:
                fail(
                    QualityReasonCode.PITCH_OUT_OF_RANGE,
                    metrics.pitch,
                    t.max_abs_pitch_deg,
                    f"head tilted too far up or down: pitch {metrics.pitch:.1f}° "
                    f"(limit ±{t.max_abs_pitch_deg:g}°)",
                )
        return QualityVerdict(passed=not reasons, reasons=reasons)

    def assess(self, image_bgr: ImageBGR, faces: Sequence[DetectedFace]) -> ImageAssessment:
        """See ``assess_image``."""
        if not faces:
            reason = QualityReason(
                code=QualityReasonCode.NO_FACE,
                value=0,
                threshold=1,
                message="no face found in the image",
            )
            return ImageAssessment(face_count=0, passed=False, reasons=[reason])
        if len(faces) > 1:
            reason = QualityReason(
                code=QualityReasonCode.MULTIPLE_FACES,
                value=len(faces),
                threshold=1,
                message=f"{len(faces)} faces found; exactly one is required",
            )
            return ImageAssessment(face_count=len(faces), passed=False, reasons=[reason])
        metrics = measure_quality(image_bgr, faces[0])
        verdict = self.evaluate(metrics)
        return ImageAssessment(
            face_count=1, passed=verdict.passed, reasons=verdict.reasons, metrics=metrics
        )


def assess_image(
    image_bgr: ImageBGR, faces: Sequence[DetectedFace], gate: QualityGate | None = None
) -> ImageAssessment:
    """Judge a whole image: no face and several faces are refusals of their own; with
    exactly one face, its metrics and every failed check. ``gate`` defaults to one built
    from the process settings."""
    return (gate or QualityGate()).assess(image_bgr, faces)


def _r(value: float) -> float:
    return round(float(value), _DECIMALS)
