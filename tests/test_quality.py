"""Quality metrics, head pose and the quality gate, on real photos and on variants of them."""

from __future__ import annotations

import math
import warnings
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from helpers_faces import (
    EDGE_DIR,
    FRONTAL_PHOTOS,
    GROUP_DIR,
    IDENTITIES_DIR,
    SHARED_DIR,
    identity_photos,
    read_bgr,
    shared_pack,
)
from pydantic import ValidationError

from shared.config import Settings
from shared.imaging import decode_image
from shared.quality_codes import QualityReasonCode as Code
from workers.inference.face_pack import DetectedFace
from workers.inference.pose import (
    HeadPose,
    generic_5_point_face,
    pose_from_5_points,
    pose_from_landmark_3d_68,
    rotation_from_angles,
)
from workers.inference.quality import (
    ImageAssessment,
    QualityGate,
    QualityMetrics,
    assess_image,
    measure_quality,
)

Image = npt.NDArray[np.uint8]

DEFAULT_GATE = QualityGate(Settings())


def _assess(image: Image, gate: QualityGate = DEFAULT_GATE) -> ImageAssessment:
    return assess_image(image, shared_pack().detect(image), gate)


def _u8(array: Any) -> Image:
    """OpenCV's result as the uint8 array the pipeline takes (cv2's stubs say MatLike)."""
    return np.ascontiguousarray(array, dtype=np.uint8)


def _codes(assessment: ImageAssessment) -> list[Code]:
    return [r.code for r in assessment.reasons]


def _pose(image: Image) -> HeadPose:
    (face,) = shared_pack().detect(image)
    assert face.pose is not None
    return face.pose


def _metrics(**overrides: float | int | str) -> QualityMetrics:
    values: dict[str, float | int | str] = {
        "det_score": 0.8,
        "bbox_width": 200.0,
        "bbox_height": 260.0,
        "face_area_ratio": 0.1,
        "blur": 100.0,
        "brightness": 120.0,
        "yaw": 0.0,
        "pitch": 0.0,
        "roll": 0.0,
        "pose_source": "5_point",
        "image_width": 640,
        "image_height": 480,
    }
    values.update(overrides)
    return QualityMetrics.model_validate(values)


# --- reason codes ---------------------------------------------------------------------------


def test_reason_codes_are_the_published_strings() -> None:
    assert [c.value for c in Code] == [
        "no_face",
        "multiple_faces",
        "low_detection_score",
        "face_too_small",
        "too_blurry",
        "too_dark",
        "too_bright",
        "face_area_too_small",
        "yaw_out_of_range",
        "pitch_out_of_range",
        "face_truncated",
        "eyes_closed",
        "face_occluded",
        "mask",
        "sunglasses",
        "spoof_suspected",
    ]


# --- the gate on constructed metrics --------------------------------------------------------


def test_values_at_the_thresholds_pass() -> None:
    metrics = _metrics(
        det_score=0.5,
        bbox_width=90,
        blur=8,
        brightness=25,
        face_area_ratio=0.02,
        yaw=-30,
        pitch=20,
    )
    assert DEFAULT_GATE.evaluate(metrics).passed
    assert DEFAULT_GATE.evaluate(_metrics(brightness=235)).passed


def test_every_failing_check_is_reported_in_order() -> None:
    metrics = _metrics(
        det_score=0.3,
        bbox_width=40,
        face_area_ratio=0.005,
        blur=2.5,
        brightness=12.3,
        yaw=-41.2,
        pitch=25,
    )
    verdict = DEFAULT_GATE.evaluate(metrics)
    assert not verdict.passed
    assert [r.code for r in verdict.reasons] == [
        Code.LOW_DETECTION_SCORE,
        Code.FACE_TOO_SMALL,
        Code.FACE_AREA_TOO_SMALL,
        Code.TOO_BLURRY,
        Code.TOO_DARK,
        Code.YAW_OUT_OF_RANGE,
        Code.PITCH_OUT_OF_RANGE,
    ]
    by_code = {r.code: r for r in verdict.reasons}
    dark = by_code[Code.TOO_DARK]
    assert (dark.value, dark.threshold) == (12.3, 25.0)
    assert dark.message == "image too dark: mean brightness 12.3 < 25"
    assert by_code[Code.FACE_TOO_SMALL].message == "face too small: 40 px wide < 90 px"
    assert by_code[Code.YAW_OUT_OF_RANGE].value == -41.2
    assert by_code[Code.YAW_OUT_OF_RANGE].message == (
        "head turned too far sideways: yaw -41.2° (limit ±30°)"
    )
    bright = DEFAULT_GATE.evaluate(_metrics(brightness=240.06)).reasons
    assert [(r.code, r.message) for r in bright] == [
        (Code.TOO_BRIGHT, "image too bright: mean brightness 240.1 > 235")
    ]
    # Reasons serialise to plain JSON types (the jobs store them as JSON).
    dumped = verdict.model_dump(mode="json")
    assert dumped["reasons"][0] == {
        "code": "low_detection_score",
        "value": 0.3,
        "threshold": 0.5,
        "message": "face not clearly detected: detection score 0.30 < 0.5",
    }


def test_pose_checks_follow_settings() -> None:
    turned = _metrics(yaw=45.0, pitch=-30.0)
    assert not DEFAULT_GATE.evaluate(turned).passed
    assert QualityGate(Settings(pose_gate_enabled=False)).evaluate(turned).passed
    loose = QualityGate(Settings(max_abs_yaw_deg=50, max_abs_pitch_deg=35))
    assert loose.evaluate(turned).passed
    assert loose.thresholds.max_abs_yaw_deg == 50


def test_metrics_refuse_non_finite_numbers() -> None:
    with pytest.raises(ValidationError):
        _metrics(blur=float("nan"))
    with pytest.raises(ValidationError):
        _metrics(brightness=float("inf"))


# --- head pose ------------------------------------------------------------------------------


def _project(
    points_3d: npt.NDArray[np.float64], pitch: float, yaw: float, roll: float
) -> npt.NDArray[np.float64]:
    """Orthographic image of ``points_3d`` turned by the angles: 100 px per unit, at (320, 240)."""
    rotated = (rotation_from_angles(pitch, yaw, roll) @ points_3d.T).T
    return rotated[:, :2] * 100.0 + np.array([320.0, 240.0])


@pytest.mark.parametrize("pitch", [-30.0, -10.0, 0.0, 15.0, 30.0])
@pytest.mark.parametrize("yaw", [-50.0, -20.0, 0.0, 25.0, 50.0])
@pytest.mark.parametrize("roll", [-30.0, 0.0, 20.0])
def test_5_point_pose_recovers_known_rotations(pitch: float, yaw: float, roll: float) -> None:
    pose = pose_from_5_points(_project(generic_5_point_face(), pitch, yaw, roll))
    # Exact up to the template's own asymmetry (its eyes are 0.3° off level).
    assert pose.pitch == pytest.approx(pitch, abs=1.0)
    assert pose.yaw == pytest.approx(yaw, abs=1.0)
    assert pose.roll == pytest.approx(roll, abs=1.0)
    assert pose.source == "5_point"


def test_3d_landmark_pose_matches_insightface_and_the_5_point_convention() -> None:
    from insightface.utils import transform

    rng = np.random.default_rng(7)
    mean_shape = rng.normal(size=(68, 3))
    for pitch, yaw, roll in [(10.0, -25.0, 5.0), (-15.0, 40.0, -12.0), (0.0, 0.0, 0.0)]:
        rotated = (rotation_from_angles(pitch, yaw, roll) @ mean_shape.T).T
        landmarks = rotated * 87.0 + np.array([300.0, 200.0, 10.0])  # scale and shift
        ours = pose_from_landmark_3d_68(landmarks, mean_shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # numpy 1.x lstsq rcond notice
            affine = transform.estimate_affine_matrix_3d23d(mean_shape, landmarks)
        theirs = transform.matrix2angle(transform.P2sRt(affine)[1])
        assert (ours.pitch, ours.yaw, ours.roll) == pytest.approx(theirs, abs=1e-6)
        assert (ours.pitch, ours.yaw, ours.roll) == pytest.approx((pitch, yaw, roll), abs=1e-6)
        assert ours.source == "landmark_3d_68"
    # The same head seen through the 5-point estimate reads the same angles and signs.
    face = generic_5_point_face()
    three_d = pose_from_landmark_3d_68((rotation_from_angles(8, 22, -6) @ face.T).T, face)
    five = pose_from_5_points(_project(face, 8, 22, -6))
    assert (five.pitch, five.yaw, five.roll) == pytest.approx(
        (three_d.pitch, three_d.yaw, three_d.roll), abs=1.0
    )


def test_5_point_pose_refuses_degenerate_keypoints() -> None:
    with pytest.raises(ValueError, match="coincide"):
        pose_from_5_points(np.array([[10, 10], [10, 10], [10, 20], [8, 30], [12, 30]]))
    with pytest.raises(ValueError, match="five finite"):
        pose_from_5_points(np.zeros((3, 2)))


@pytest.mark.parametrize("name", FRONTAL_PHOTOS)
def test_frontal_photos_read_near_zero_pose(name: str) -> None:
    pose = _pose(read_bgr(IDENTITIES_DIR / name))
    assert abs(pose.yaw) < 8 and abs(pose.pitch) < 8 and abs(pose.roll) < 8, pose


def test_mirroring_a_photo_flips_yaw_and_roll() -> None:
    # SCRFD's keypoints are not exactly mirror-symmetric: on these 12 photos yaw + mirrored
    # yaw ranged -4.7..3.8°, roll sums within 3.6° and pitch moved by up to 9.2° (the 152 px
    # alex_lacamoire/img2.png). The bounds below sit just outside what was measured.
    for _, path in identity_photos():
        image = read_bgr(path)
        pose = _pose(image)
        mirrored = _pose(np.ascontiguousarray(image[:, ::-1]))
        assert mirrored.yaw == pytest.approx(-pose.yaw, abs=6.0), path
        assert mirrored.roll == pytest.approx(-pose.roll, abs=5.0), path
        assert mirrored.pitch == pytest.approx(pose.pitch, abs=10.0), path
        if abs(pose.yaw) > 8:
            assert math.copysign(1, mirrored.yaw) == -math.copysign(1, pose.yaw), path


def test_turned_faces_read_larger_yaw_with_the_documented_sign() -> None:
    # obama2.jpg: he looks towards the image's left (his right), so yaw < 0.
    obama2 = _pose(read_bgr(IDENTITIES_DIR / "obama" / "obama2.jpg"))
    assert -25 < obama2.yaw < -10
    # pad/print/image_F1.jpg: the poster's face is turned well to the image's left.
    poster = _pose(read_bgr(SHARED_DIR / "faces" / "pad" / "print" / "image_F1.jpg"))
    assert poster.yaw < -30
    frontal = _pose(read_bgr(IDENTITIES_DIR / "obama" / "obama.jpg"))
    assert abs(frontal.yaw) < abs(obama2.yaw) < abs(poster.yaw)


# --- real photos through the gate -----------------------------------------------------------


def test_every_identity_photo_has_one_face_that_passes() -> None:
    for _, path in identity_photos():
        image = read_bgr(path)
        assessment = _assess(image)
        assert assessment.face_count == 1, path
        assert assessment.passed, (path, [r.message for r in assessment.reasons])
        metrics = assessment.metrics
        assert metrics is not None
        assert (metrics.image_height, metrics.image_width) == image.shape[:2]
        assert metrics.bbox_width >= 90 and 0.02 <= metrics.face_area_ratio < 1
        assert 25 <= metrics.brightness <= 235 and metrics.blur >= 8
        # No 3D landmark model in the test pack: the face mesh gives the pose.
        assert metrics.pose_source == "face_mesh"
        assert QualityMetrics.model_validate_json(metrics.model_dump_json()) == metrics


@pytest.mark.parametrize(
    ("name", "count"),
    [("t1.jpg", 6), ("two_people.jpg", 2), ("kit_with_rose.jpg", 2), ("obama_and_biden.jpg", 3)],
)
def test_group_photos_are_refused_as_multiple_faces(name: str, count: int) -> None:
    assessment = _assess(read_bgr(GROUP_DIR / name))
    assert assessment.face_count == count
    assert not assessment.passed and assessment.metrics is None
    (reason,) = assessment.reasons
    assert reason.code == Code.MULTIPLE_FACES
    assert reason.value == count
    assert reason.message == f"{count} faces found; exactly one is required"


def test_edge_photos() -> None:
    outcomes = {}
    for path in sorted(EDGE_DIR.iterdir()):
        assessment = _assess(read_bgr(path))
        outcomes[path.name] = (assessment.face_count, [c.value for c in _codes(assessment)])
        # Consistency on every photo: no face <=> no_face, one face <=> metrics.
        assert (assessment.face_count == 0) == (_codes(assessment) == [Code.NO_FACE])
        assert (assessment.face_count == 1) == (assessment.metrics is not None)
    print("\nedge photos:", outcomes)
    # A 240p frame: the face is found but is 52 px wide.
    assert outcomes["obama-240p.jpg"] == (1, ["face_too_small"])
    # 106 px wide at 320x240: small but above every threshold.
    assert outcomes["obama_small.jpg"] == (1, [])
    # mask_*.jpg are pictures of masks alone (InsightFace's mask textures): no face. Masks
    # worn on real faces are tested in tests/test_capture_quality.py.
    for name in ("mask_black.jpg", "mask_blue.jpg", "mask_green.jpg", "mask_white.jpg"):
        assert outcomes[name] == (0, ["no_face"]), name


def test_32_bit_png_is_decoded_without_alpha_and_handled() -> None:
    data = (EDGE_DIR / "32bit.png").read_bytes()
    unchanged = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert unchanged.shape[2] == 4  # the file really has an alpha channel
    pixels = decode_image(data, max_bytes=len(data), max_pixels=10**8).pixels
    assert pixels.shape == (*unchanged.shape[:2], 3)
    assessment = _assess(pixels)
    assert assessment.face_count == 1 and assessment.passed
    # It is obama2.jpg saved as RGBA: the same face, the same identity.
    pack = shared_pack()
    other = read_bgr(IDENTITIES_DIR / "obama" / "obama2.jpg")
    (face_png,), (face_jpg,) = pack.detect(pixels), pack.detect(other)
    emb = pack.embed([(pixels, face_png.kps), (other, face_jpg.kps)])
    assert float(emb[0] @ emb[1]) > 0.9


def test_a_turned_poster_face_is_refused_for_yaw() -> None:
    assessment = _assess(read_bgr(SHARED_DIR / "faces" / "pad" / "print" / "image_F1.jpg"))
    assert _codes(assessment) == [Code.YAW_OUT_OF_RANGE]
    assert assessment.metrics is not None and assessment.metrics.yaw < -30
    assert QualityGate(Settings(pose_gate_enabled=False)).evaluate(assessment.metrics).passed


# --- synthetic variants of a real photo -----------------------------------------------------


@pytest.fixture(scope="module")
def portrait() -> Image:
    return read_bgr(IDENTITIES_DIR / "obama" / "obama.jpg")


def test_original_portrait_passes(portrait: Image) -> None:
    assert _assess(portrait).passed


def test_darkened_photo_is_too_dark(portrait: Image) -> None:
    dark = (portrait.astype(np.float32) * 0.05).astype(np.uint8)
    assessment = _assess(dark)
    assert assessment.face_count == 1
    assert Code.TOO_DARK in _codes(assessment)
    assert assessment.metrics is not None and assessment.metrics.brightness < 10
    # The Laplacian variance scales with contrast squared (x0.05 -> x0.0025), so a dark photo
    # also reads as blurry: both reasons are listed.
    assert _codes(assessment) == [Code.TOO_BLURRY, Code.TOO_DARK]


def test_blurred_photo_is_too_blurry(portrait: Image) -> None:
    assessment = _assess(_u8(cv2.GaussianBlur(portrait, (0, 0), sigmaX=8)))
    assert _codes(assessment) == [Code.TOO_BLURRY]
    assert assessment.metrics is not None and assessment.metrics.blur < 8


def test_brightened_photo_is_too_bright(portrait: Image) -> None:
    bright = np.clip(portrait.astype(np.int16) + 150, 0, 255).astype(np.uint8)
    assessment = _assess(bright)
    assert _codes(assessment) == [Code.TOO_BRIGHT]
    assert assessment.metrics is not None and assessment.metrics.brightness > 235


def test_downscaled_photo_is_too_small(portrait: Image) -> None:
    tiny = _u8(cv2.resize(portrait, None, fx=1 / 8, fy=1 / 8, interpolation=cv2.INTER_AREA))
    assessment = _assess(tiny)
    assert not assessment.passed
    codes = _codes(assessment)
    assert Code.FACE_TOO_SMALL in codes or codes == [Code.NO_FACE]


def test_face_small_in_a_large_frame_is_refused(portrait: Image) -> None:
    canvas = np.full((2400, 2400, 3), 128, dtype=np.uint8)
    canvas[: portrait.shape[0], : portrait.shape[1]] = portrait
    assessment = _assess(canvas)
    assert _codes(assessment) == [Code.FACE_AREA_TOO_SMALL]
    assert assessment.metrics is not None and assessment.metrics.bbox_width >= 90


def test_measure_quality_clips_the_box_and_reads_the_right_region(portrait: Image) -> None:
    (face,) = shared_pack().detect(portrait)
    # Paint the face box black: brightness drops to 0 and the Laplacian is flat.
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    painted = portrait.copy()
    painted[max(y1, 0) : y2 + 1, max(x1, 0) : x2 + 1] = 0
    metrics = measure_quality(painted, face)
    assert metrics.brightness == 0 and metrics.blur == 0
    # A box reaching past the image is clipped, not an error; its area still counts in full.
    past = DetectedFace(
        bbox=(-50.0, -50.0, 150.0, 150.0), det_score=0.9, kps=face.kps, pose=face.pose
    )
    clipped = measure_quality(portrait, past)
    assert clipped.bbox_width == 200
    area = portrait.shape[0] * portrait.shape[1]
    assert clipped.face_area_ratio == pytest.approx(200 * 200 / area, abs=1e-4)
    grey = cv2.cvtColor(portrait[0:150, 0:150], cv2.COLOR_BGR2GRAY)
    assert clipped.brightness == pytest.approx(float(grey.mean()), abs=1e-3)
    # Without a pose from the detector, the 5-point estimate is used.
    bare = DetectedFace(bbox=face.bbox, det_score=face.det_score, kps=face.kps)
    assert measure_quality(portrait, bare).yaw == pytest.approx(face.pose.yaw, abs=1e-3)  # type: ignore[union-attr]


def test_faces_cut_by_the_frame_are_truncated() -> None:
    """The partial-face photos pass every prototype check but half the face is missing."""
    from helpers_faces import SHARED_DIR

    from workers.inference.face_pack import FacePack

    pack = FacePack.load(SHARED_DIR / "models" / "facepack-test")
    gate = QualityGate(Settings())
    for name in ("obama_partial_face.jpg", "obama_partial_face2.jpg"):
        image = cv2.imread(str(SHARED_DIR / "faces" / "edge" / name))
        result = assess_image(image, pack.detect(image), gate)
        codes = [r.code for r in result.reasons]
        assert codes == [Code.FACE_TRUNCATED], (name, codes)
        assert result.metrics is not None and result.metrics.aligned_crop_coverage < 0.8
    whole = cv2.imread(str(SHARED_DIR / "faces" / "identities" / "obama" / "obama.jpg"))
    metrics = measure_quality(whole, pack.detect(whole)[0])
    assert metrics.aligned_crop_coverage == 1.0
