"""Head pose (pitch, yaw, roll in degrees) from face landmarks.

Three sources, one convention, chosen by ``workers.inference.quality.choose_pose``
(FACEAUTH_POSE_SOURCE, default ``auto`` = the first available):

1. ``landmark_3d_68``: the pack has InsightFace's 68-point 3D landmark model
   (``1k3d68.onnx`` in buffalo_l); the pose is InsightFace's own: an affine camera fitted
   from the model's mean shape to the predicted 3D landmarks, decomposed into Euler angles,
   exactly as ``FaceAnalysis`` does.
2. ``face_mesh``: MediaPipe's face mesh (``workers.inference.face_mesh``); the same affine
   fit of the same generic 3D face (InsightFace's 68-point mean shape) to the 68 mesh points
   that stand for iBUG's landmarks, plus a fixed pitch offset (``FACE_MESH_PITCH_OFFSET_DEG``).
3. ``5_point``: closed form from the detector's five keypoints.

Convention (InsightFace's, derived from its mean shape: x right, y down, z towards the
camera), angles in degrees:

* yaw > 0: the face turns towards the image's right (the subject's own left);
* pitch > 0: the face tilts up (chin forward, the nose moves up in the image);
* roll > 0: the face leans clockwise in the image (the image-right eye is lower).

Measured error (tests/test_capture_quality.py, the 12 shared identity photos):

* roll, against photos turned in-plane by ±10° and ±20° (48 cases): face mesh mean 0.7°,
  worst 2.3°; 5-point mean 1.7°, worst 5.4°.
* yaw and pitch, 5-point against the face mesh on the photos and their mirror images (24
  faces): yaw mean 3.1°, worst 8.8°; pitch mean 4.8°, worst 12.3°. The mesh's own
  consistency: mirroring a photo changes its mesh pitch by at most 3° and flips yaw and
  roll within 5°.
* 3D landmarks: not measurable here (the test pack has no 1k3d68 model); it is
  InsightFace's reference method, which the face-mesh source copies.

Why the 5-point pitch is the weak axis: it rests on how far the nose tip sits below the
eyes, which varies from person to person by about ±0.05 inter-ocular distances, i.e.
about ±5°. The mouth corners are deliberately not used: a smile or an open mouth moves
them, and a 5-point perspective fit (solvePnP) that used them read smiling frontal
portraits as looking 30-40° down. A full-perspective solvePnP of the mesh points was
tried too: with no known focal length or principal point (photos are cropped), it read
pitch from where the face sits in the frame (frontal faces at -10° to -30°), so the
affine (weak-perspective) fit is used, as InsightFace does.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

PoseSource = Literal["landmark_3d_68", "face_mesh", "5_point"]

FloatArray = npt.NDArray[np.floating]

# ArcFace's 112x112 alignment template (insightface.utils.face_align.arcface_dst): where an
# average frontal face's eyes, nose tip and mouth corners land. It defines "frontal" for the
# 5-point estimate, so a face that aligns onto the template without rotation reads (0, 0, 0).
_ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)
_TEMPLATE_IOD = float(np.linalg.norm(_ARCFACE_TEMPLATE[1] - _ARCFACE_TEMPLATE[0]))
# How far the nose tip sits below the midpoint of the eyes, in inter-ocular distances (0.57).
NOSE_DROP_IOD = float((_ARCFACE_TEMPLATE[2, 1] - _ARCFACE_TEMPLATE[:2, 1].mean()) / _TEMPLATE_IOD)
# How far the nose tip stands in front of the eyes, in inter-ocular distances: measured on
# InsightFace's 68-point mean shape (points 30 vs the centres of 36-41 and 42-47).
NOSE_DEPTH_IOD = 0.534
# Added to the face-mesh pitch: minus the mean raw face-mesh pitch of the 12 shared
# identity photos and their mirror images (24 near-frontal press photos), i.e. an average
# press photo reads level, as it does for the 5-point estimate whose ArcFace template is an
# average of aligned faces.
FACE_MESH_PITCH_OFFSET_DEG = 6.5


@dataclass(frozen=True)
class HeadPose:
    """Head rotation in degrees (see the module docstring for signs) and how it was found."""

    pitch: float
    yaw: float
    roll: float
    source: PoseSource


def pose_from_5_points(kps: FloatArray) -> HeadPose:
    """Estimate the pose from SCRFD's five keypoints (eyes, nose tip, mouth corners).

    Model: the eyes at (±0.5, 0, 0) and the nose tip at (0, NOSE_DROP_IOD, NOSE_DEPTH_IOD),
    in units of the inter-ocular distance, seen by an orthographic camera. Then:

    * roll is the angle of the eye line;
    * after undoing roll, the eyes' projected distance shrinks by cos(yaw) and the nose
      moves sideways by depth·sin(yaw): ``x_nose / iod_projected = depth · tan(yaw)``;
    * the nose's height below the eyes, ``drop·cos(pitch) - depth·sin(pitch)``, gives pitch.

    Pitch changes how far the nose stands out in the yaw equation and yaw changes the
    true inter-ocular distance used for pitch, so the two are solved together (in closed
    form: exact for an orthographic view of the model, see tests/test_quality.py).
    """
    points = np.asarray(kps, dtype=np.float64)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"expected five finite (x, y) keypoints, got shape {points.shape}")
    left_eye, right_eye, nose = points[0], points[1], points[2]
    eye_line = right_eye - left_eye
    iod_projected = float(np.hypot(eye_line[0], eye_line[1]))
    if iod_projected < 1e-6:
        raise ValueError("the two eye keypoints coincide; no pose can be estimated")

    roll = math.atan2(eye_line[1], eye_line[0])
    cos_r, sin_r = math.cos(-roll), math.sin(-roll)
    offset = nose - (left_eye + right_eye) / 2.0
    # The nose relative to the eye midpoint, in a frame where the eye line is horizontal.
    nose_x = (cos_r * offset[0] - sin_r * offset[1]) / iod_projected
    nose_y_px = sin_r * offset[0] + cos_r * offset[1]

    # Unknowns: c = cos(yaw) and the nose's rotated (height, depth) = (h, d_rot), where
    # h² + d_rot² = drop² + depth² = rho² (pitch only rotates that vector). Observed:
    #   a = nose_x / iod_projected = d_rot · tan(yaw),   b = nose_y / iod_projected = h / c.
    # Eliminating h and d_rot gives b²u² - (a² + b² + rho²)u + rho² = 0 for u = c², which
    # has exactly one root in (0, 1] (f(0) = rho² > 0, f(1) = -a² <= 0).
    a = nose_x
    b = nose_y_px / iod_projected
    rho_sq = NOSE_DROP_IOD**2 + NOSE_DEPTH_IOD**2
    s = a * a + b * b + rho_sq
    u = 2.0 * rho_sq / (s + math.sqrt(max(s * s - 4.0 * b * b * rho_sq, 0.0)))
    cos_yaw = math.sqrt(min(max(u, 0.0), 1.0))
    yaw = math.copysign(math.acos(cos_yaw), a)
    height = b * cos_yaw
    # The nose is taken to stand in front of the eyes (d_rot >= 0): pitch >= -43°.
    depth = math.sqrt(max(rho_sq - height * height, 0.0))
    pitch = math.atan2(depth, height) - math.atan2(NOSE_DEPTH_IOD, NOSE_DROP_IOD)
    return HeadPose(
        pitch=math.degrees(pitch), yaw=math.degrees(yaw), roll=math.degrees(roll), source="5_point"
    )


def pose_from_landmark_3d_68(landmarks: FloatArray, mean_shape: FloatArray) -> HeadPose:
    """InsightFace's pose from its 68-point 3D landmarks (``landmark_3d_68``).

    ``mean_shape`` is the landmark model's ``mean_lmk`` (68x3). Same maths as
    ``insightface.utils.transform`` (estimate_affine_matrix_3d23d, P2sRt, matrix2angle),
    written out here so that numpy 1.x's lstsq ``rcond`` FutureWarning is not raised on
    every face; tests/test_quality.py checks the two agree.
    """
    target = np.asarray(landmarks, dtype=np.float64)
    source = np.asarray(mean_shape, dtype=np.float64)
    if target.shape != source.shape or target.ndim != 2 or target.shape[1] != 3:
        raise ValueError(
            f"landmarks {target.shape} and mean shape {source.shape} must both be (N, 3)"
        )
    homogeneous = np.hstack([source, np.ones((source.shape[0], 1))])
    affine = np.linalg.lstsq(homogeneous, target, rcond=None)[0].T  # 3x4, target = P @ [X, 1]
    rotation = affine_to_rotation(affine)
    pitch, yaw, roll = rotation_to_angles(rotation)
    return HeadPose(pitch=pitch, yaw=yaw, roll=roll, source="landmark_3d_68")


def pose_from_face_mesh(ibug_68_points: FloatArray) -> HeadPose:
    """Head pose from MediaPipe face-mesh points standing for iBUG's 68 landmarks.

    The affine camera of ``pose_from_landmark_3d_68`` is fitted from InsightFace's 68-point
    mean shape (a generic 3D face) to the 2D mesh points (x, y; the fit uses only the image
    plane), so this source shares the 3D-landmark source's maths and convention. The mesh
    points are MediaPipe's, not iBUG's annotation: on the shared photos the fit reads
    "level" ``FACE_MESH_PITCH_OFFSET_DEG`` lower than the ArcFace template (the 5-point
    definition), so that offset is added back.
    """
    points = np.asarray(ibug_68_points, dtype=np.float64)
    if points.shape != (68, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"expected 68 finite (x, y) points, got shape {points.shape}")
    target = np.column_stack([points, np.zeros(68)])
    raw = pose_from_landmark_3d_68(target, insightface_mean_shape())
    return HeadPose(
        pitch=raw.pitch + FACE_MESH_PITCH_OFFSET_DEG, yaw=raw.yaw, roll=raw.roll, source="face_mesh"
    )


@functools.cache
def insightface_mean_shape() -> FloatArray:
    """InsightFace's 68-point mean 3D face (``meanshape_68.pkl``, the 1k3d68 model's mean_lmk)."""
    from insightface.data import get_object

    return np.asarray(get_object("meanshape_68.pkl"), dtype=np.float64)


def affine_to_rotation(affine: FloatArray) -> FloatArray:
    """The rotation part of an affine camera (``P2sRt``): normalised rows 1-2 and their cross."""
    r1 = affine[0, :3] / np.linalg.norm(affine[0, :3])
    r2 = affine[1, :3] / np.linalg.norm(affine[1, :3])
    return np.stack([r1, r2, np.cross(r1, r2)])


def rotation_to_angles(rotation: FloatArray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees of ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (matrix2angle)."""
    r = rotation
    sy = math.hypot(float(r[0, 0]), float(r[1, 0]))
    if sy >= 1e-6:
        x = math.atan2(float(r[2, 1]), float(r[2, 2]))
        y = math.atan2(float(-r[2, 0]), sy)
        z = math.atan2(float(r[1, 0]), float(r[0, 0]))
    else:  # gimbal lock at yaw = ±90°
        x = math.atan2(float(-r[1, 2]), float(r[1, 1]))
        y = math.atan2(float(-r[2, 0]), sy)
        z = 0.0
    return math.degrees(x), math.degrees(y), math.degrees(z)


def rotation_from_angles(pitch: float, yaw: float, roll: float) -> FloatArray:
    """``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` for angles in degrees; the inverse of the above."""
    p, y, r = (math.radians(a) for a in (pitch, yaw, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def generic_5_point_face() -> FloatArray:
    """The 3D five-point face the 5-point estimate assumes (inter-ocular distance units).

    Rows: image-left eye, image-right eye, nose tip, mouth corners; x right, y down, z
    towards the camera, origin between the eyes. Used by tests to synthesise keypoints.
    """
    centred = (_ARCFACE_TEMPLATE - _ARCFACE_TEMPLATE[:2].mean(axis=0)) / _TEMPLATE_IOD
    depth = np.array([0.0, 0.0, NOSE_DEPTH_IOD, 0.12, 0.12])  # mouth: mean shape, unused above
    return np.column_stack([centred, depth])
