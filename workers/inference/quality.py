"""Quality metrics of a detected face and the gate that accepts or refuses it.

The thresholds are the enrollment prototype's (see ``shared.config.Settings``): exactly
one face, detector score >= 0.5, box >= 90 px wide, Laplacian variance >= 8 on the face,
mean face brightness 25-235, face box >= 2% of the image, and optionally |yaw| <= 30°,
|pitch| <= 20°; then what a capture screen can ask the person to fix: eyes closed (eye
aspect ratio from the 3D landmarks or the face mesh), a face mask, sunglasses, or one eye,
the nose or the mouth covered (``workers.inference.occlusion``). Every failing check is
reported, each with a stable code (``shared.quality_codes``), the measured value and the
threshold, so a client can tell the user everything to fix at once.

Head pose comes from the best source available (``FACEAUTH_POSE_SOURCE=auto``): the pack's
68-point 3D landmark model, else MediaPipe's face mesh, else the detector's 5 keypoints
(``workers.inference.pose`` states each one's measured error).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from shared.config import Settings, get_settings
from shared.quality_codes import QualityReasonCode
from workers.inference.face_mesh import (
    LEFT_EYE_EAR,
    RIGHT_EYE_EAR,
    FaceMesh,
    MeshLandmarks,
    eye_aspect_ratio,
    get_face_mesh,
)
from workers.inference.face_pack import DetectedFace
from workers.inference.occlusion import region_skin
from workers.inference.pose import HeadPose, PoseSource, pose_from_5_points, pose_from_face_mesh

log = logging.getLogger(__name__)

ImageBGR = npt.NDArray[np.uint8]

# iBUG 68-point eye contours in the same six-point order as the face mesh's.
_IBUG_RIGHT_EYE = (36, 37, 38, 39, 40, 41)
_IBUG_LEFT_EYE = (42, 43, 44, 45, 46, 47)
# Beyond this |yaw| the eye-aspect ratio is not yaw-corrected (nor trusted): the far eye is
# barely visible and the pose gate refuses the face anyway.
_EAR_MAX_YAW_DEG = 60.0

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
    # Mean of both eyes' aspect ratio (lid gap / eye width) times cos(yaw); None when no
    # eyelid landmarks were available (5-point pose source only).
    eye_aspect_ratio: float | None = None
    # Skin-coloured share (0-1) of regions of the aligned face (workers.inference.occlusion);
    # "right"/"left" are the subject's own.
    right_eye_skin: float | None = None
    left_eye_skin: float | None = None
    nose_skin: float | None = None
    mouth_skin: float | None = None


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
    eyes_closed_gate_enabled: bool = True
    min_eye_aspect_ratio: float = 0.16
    mask_gate_enabled: bool = True
    min_mouth_skin_fraction: float = 0.4
    sunglasses_gate_enabled: bool = True
    min_eye_skin_fraction: float = 0.4
    occlusion_gate_enabled: bool = True
    min_region_skin_fraction: float = 0.2

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
            eyes_closed_gate_enabled=settings.eyes_closed_gate_enabled,
            min_eye_aspect_ratio=settings.min_eye_aspect_ratio,
            mask_gate_enabled=settings.mask_gate_enabled,
            min_mouth_skin_fraction=settings.min_mouth_skin_fraction,
            sunglasses_gate_enabled=settings.sunglasses_gate_enabled,
            min_eye_skin_fraction=settings.min_eye_skin_fraction,
            occlusion_gate_enabled=settings.occlusion_gate_enabled,
            min_region_skin_fraction=settings.min_region_skin_fraction,
        )


def measure_quality(
    image_bgr: ImageBGR,
    face: DetectedFace,
    mesh: MeshLandmarks | None = None,
    *,
    pose: HeadPose | None = None,
) -> QualityMetrics:
    """Blur, brightness, size, pose, eye openness and occlusion of ``face`` in ``image_bgr``.

    ``pose`` defaults to the best of the face's 3D-landmark pose, the face-mesh pose from
    ``mesh`` and the 5-point estimate (``choose_pose``). The eye aspect ratio comes from the
    face's 3D landmarks, else from ``mesh``, else it is not measured.
    """
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
    pose = pose or choose_pose(face, mesh, "auto")
    from insightface.utils.face_align import estimate_norm

    align = np.asarray(estimate_norm(np.asarray(face.kps, dtype=np.float32), 112))
    skin = region_skin(image_bgr, align)
    ear = _eye_aspect_ratio(face, mesh, pose)
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
        aligned_crop_coverage=_r(_coverage(image_bgr.shape[:2], align)),
        eye_aspect_ratio=None if ear is None else _r(ear),
        right_eye_skin=_r(skin.right_eye),
        left_eye_skin=_r(skin.left_eye),
        nose_skin=_r(skin.nose),
        mouth_skin=_r(skin.mouth),
    )


PoseSetting = Literal["auto", "landmark_3d", "face_mesh", "five_point"]  # FACEAUTH_POSE_SOURCE


def choose_pose(face: DetectedFace, mesh: MeshLandmarks | None, setting: PoseSetting) -> HeadPose:
    """The pose from the source ``setting`` asks for, falling back to the 5-point estimate."""
    three_d = face.pose if face.pose is not None and face.pose.source == "landmark_3d_68" else None
    if setting in ("auto", "landmark_3d") and three_d is not None:
        return three_d
    if setting in ("auto", "face_mesh") and mesh is not None:
        return pose_from_face_mesh(mesh.ibug_68())
    if face.pose is not None and face.pose.source == "5_point":
        return face.pose
    return pose_from_5_points(face.kps)


def _eye_aspect_ratio(
    face: DetectedFace, mesh: MeshLandmarks | None, pose: HeadPose
) -> float | None:
    """Mean eye aspect ratio of both eyes, corrected for the eyes' foreshortening by yaw."""
    if abs(pose.yaw) > _EAR_MAX_YAW_DEG:
        return None
    points: npt.NDArray[np.floating[Any]]
    if face.landmark_3d_68 is not None:
        points, contours = face.landmark_3d_68, (_IBUG_RIGHT_EYE, _IBUG_LEFT_EYE)
    elif mesh is not None:
        points, contours = mesh.points, (RIGHT_EYE_EAR, LEFT_EYE_EAR)
    else:
        return None
    mean = (eye_aspect_ratio(points, contours[0]) + eye_aspect_ratio(points, contours[1])) / 2.0
    # A turned head narrows each eye by cos(yaw) but not its lid gap.
    return mean * math.cos(math.radians(pose.yaw))


def _same_face(mesh: MeshLandmarks, face: DetectedFace) -> bool:
    """The mesh's eye centres lie within a third of the inter-ocular distance of SCRFD's.

    MediaPipe runs its own detector on the crop around the box: with another face close
    by, it could mesh that one.
    """
    kps = np.asarray(face.kps, dtype=np.float64)
    iod = float(np.linalg.norm(kps[1] - kps[0]))
    points = mesh.points[:, :2]
    # Image-left eye = the subject's right eye.
    eyes = np.stack(
        [points[list(RIGHT_EYE_EAR)].mean(axis=0), points[list(LEFT_EYE_EAR)].mean(axis=0)]
    )
    return bool(np.all(np.linalg.norm(eyes - kps[:2], axis=1) < iod / 3.0))


def _coverage(image_hw: tuple[int, ...], align: npt.NDArray[np.float64]) -> float:
    inside = np.ones((int(image_hw[0]), int(image_hw[1])), dtype=np.uint8)
    return float(cv2.warpAffine(inside, align, (112, 112), flags=cv2.INTER_NEAREST).mean())


def aligned_crop_coverage(image_hw: tuple[int, ...], kps: npt.NDArray[np.float32]) -> float:
    """Fraction of the ArcFace-aligned 112x112 crop that lies inside the image.

    A face cut by the frame edge can still be detected (its landmarks are extrapolated),
    but its aligned crop is partly black; the similarity transform is the very one
    ``norm_crop`` uses, so this measures exactly what the recogniser would be fed.
    """
    from insightface.utils.face_align import estimate_norm

    return _coverage(image_hw, np.asarray(estimate_norm(np.asarray(kps, dtype=np.float32), 112)))


class QualityGate:
    """Accepts or refuses one face's metrics against the configured thresholds."""

    def __init__(self, settings: Settings | None = None, *, mesh: FaceMesh | None = None) -> None:
        settings = settings or get_settings()
        self._thresholds = QualityThresholds.from_settings(settings)
        self._pose_source = settings.pose_source
        # The face mesh (one per process) when the pose setting may use it; ``mesh``
        # injects one (tests, benchmarks).
        self._mesh = mesh
        if self._mesh is None and self._pose_source in ("auto", "face_mesh"):
            self._mesh = get_face_mesh()

    @property
    def pose_source(self) -> str:
        """The configured pose source (FACEAUTH_POSE_SOURCE)."""
        return self._pose_source

    @property
    def uses_face_mesh(self) -> bool:
        return self._mesh is not None

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
        ear = metrics.eye_aspect_ratio
        if t.eyes_closed_gate_enabled and ear is not None and ear < t.min_eye_aspect_ratio:
            fail(
                QualityReasonCode.EYES_CLOSED,
                ear,
                t.min_eye_aspect_ratio,
                f"eyes closed: eye aspect ratio {ear:.2f} < {t.min_eye_aspect_ratio:g}",
            )
        reasons.extend(self._occlusion_reasons(metrics))
        return QualityVerdict(passed=not reasons, reasons=reasons)

    def _occlusion_reasons(self, metrics: QualityMetrics) -> list[QualityReason]:
        """mask, sunglasses, then face_occluded for a region neither of them explains."""
        t = self._thresholds
        regions = {
            "right eye": metrics.right_eye_skin,
            "left eye": metrics.left_eye_skin,
            "nose": metrics.nose_skin,
            "mouth": metrics.mouth_skin,
        }
        shares = {name: v for name, v in regions.items() if v is not None}
        if len(shares) != len(regions):
            return []  # metrics from before occlusion was measured
        if not t.min_brightness <= metrics.brightness <= t.max_brightness:
            # Colour says nothing in a black or washed-out face; too_dark / too_bright
            # already asks for the retake that will tell.
            return []
        reasons: list[QualityReason] = []
        explained: set[str] = set()
        mouth = shares["mouth"]
        if t.mask_gate_enabled and mouth < t.min_mouth_skin_fraction:
            explained |= {"nose", "mouth"}  # a mask covers the nose as often as not
            reasons.append(
                QualityReason(
                    code=QualityReasonCode.MASK,
                    value=mouth,
                    threshold=t.min_mouth_skin_fraction,
                    message=f"mouth covered (face mask?): {mouth:.0%} of the mouth area looks "
                    f"like skin < {t.min_mouth_skin_fraction:.0%}",
                )
            )
        eyes = max(shares["right eye"], shares["left eye"])
        if t.sunglasses_gate_enabled and eyes < t.min_eye_skin_fraction:
            explained |= {"right eye", "left eye"}
            reasons.append(
                QualityReason(
                    code=QualityReasonCode.SUNGLASSES,
                    value=eyes,
                    threshold=t.min_eye_skin_fraction,
                    message=f"eyes covered (sunglasses?): {eyes:.0%} of the area around the "
                    f"better-visible eye looks like skin < {t.min_eye_skin_fraction:.0%}",
                )
            )
        if t.occlusion_gate_enabled:
            covered = {
                name: v
                for name, v in shares.items()
                if name not in explained and v < t.min_region_skin_fraction
            }
            if covered:
                worst = min(covered.values())
                names = ", ".join(covered)
                reasons.append(
                    QualityReason(
                        code=QualityReasonCode.FACE_OCCLUDED,
                        value=worst,
                        threshold=t.min_region_skin_fraction,
                        message=f"face partly covered ({names}): {worst:.0%} of it looks like "
                        f"skin < {t.min_region_skin_fraction:.0%}",
                    )
                )
        return reasons

    def face_mesh_of(self, image_bgr: ImageBGR, face: DetectedFace) -> MeshLandmarks | None:
        """The face mesh of ``face`` when this gate uses one and the pose needs it.

        With the pack's 3D landmarks (pose and eyelids) and ``auto`` the mesh adds
        nothing, so it is not run.
        """
        if self._mesh is None:
            return None
        if self._pose_source == "auto" and face.landmark_3d_68 is not None:
            return None
        mesh = self._mesh.landmarks(image_bgr, face.bbox)
        if mesh is not None and not _same_face(mesh, face):
            log.info("face mesh found another face than the detector; using the 5-point pose")
            return None
        return mesh

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
        face = faces[0]
        mesh = self.face_mesh_of(image_bgr, face)
        pose = choose_pose(face, mesh, self._pose_source)
        metrics = measure_quality(image_bgr, face, mesh, pose=pose)
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
