"""MediaPipe's face mesh (478 landmarks), loaded once per worker process.

The mesh gives what the detector's five keypoints cannot: eyelid contours (for the
eye-aspect ratio of ``eyes_closed``) and enough stable points for a head pose fitted to
a generic 3D face (``workers.inference.pose.pose_from_face_mesh``). It uses the model
bundled in the ``mediapipe`` wheel (``mp.solutions.face_mesh``), so nothing is
downloaded.

``mediapipe`` is optional (the ``facemesh`` extra): without it ``get_face_mesh`` returns
None once, with a log line, and the quality gate falls back to the 5-point pose.

The mesh runs on a square crop around the SCRFD box, scaled to at most ``CROP_SIDE``
pixels: the mesh model works at 192x192 anyway, and a small crop keeps MediaPipe's own
face detector fast (~5 ms per face on one CPU core, see tests/bench/bench_enrollment.py).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

ImageBGR = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float64]

# The crop around the detector box: this many box sides wide (MediaPipe's detector wants
# some context around the face), then scaled down to at most CROP_SIDE pixels.
CROP_MARGIN = 1.6
CROP_SIDE = 256
MESH_POINTS = 478  # 468 mesh points + 10 iris points (refine_landmarks=True)

# The six-point eye-aspect-ratio contours (Soukupova & Cech 2016): outer corner, two upper
# lid points, inner corner, two lower lid points. "Right"/"left" are the subject's own.
RIGHT_EYE_EAR = (33, 160, 158, 133, 153, 144)
LEFT_EYE_EAR = (362, 385, 387, 263, 373, 380)

# The mesh points that stand for iBUG's 68 landmarks, in iBUG order (jaw 0-16, brows
# 17-26, nose 27-35, eyes 36-47, lips 48-67): the common MediaPipe-to-dlib mapping. With
# them the pose is fitted to InsightFace's 68-point mean shape exactly as the pack's
# 1k3d68 model's landmarks are.
IBUG_68 = (
    # jaw
    127, 234, 93, 132, 58, 172, 136, 150, 152, 377, 365, 397, 288, 361, 323, 454, 356,
    # brows
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    # eyes
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # lips, outer then inner
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
)  # fmt: skip


@dataclass(frozen=True)
class MeshLandmarks:
    """The 478 mesh points in the pixel coordinates of the whole image.

    ``points[:, 2]`` is MediaPipe's relative depth in the same pixel scale as x (smaller
    is nearer the camera).
    """

    points: FloatArray  # (478, 3)

    def ibug_68(self) -> FloatArray:
        """(68, 2) image points in iBUG order (see ``IBUG_68``)."""
        return np.asarray(self.points[list(IBUG_68), :2], dtype=np.float64)


def eye_aspect_ratio(points: npt.NDArray[np.floating[Any]], contour: tuple[int, ...]) -> float:
    """(|p2-p6| + |p3-p5|) / (2 |p1-p4|) of a six-point eye contour; about 0.2-0.4 open."""
    p = np.asarray(points, dtype=np.float64)[list(contour), :2]
    width = float(np.linalg.norm(p[0] - p[3]))
    if width < 1e-6:
        return 0.0
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2.0 * width))


class FaceMesh:
    """One MediaPipe FaceMesh graph. Build it with ``FaceMesh.load`` or ``get_face_mesh``."""

    def __init__(self, graph: Any) -> None:
        self._graph = graph
        # A MediaPipe graph takes one image at a time; threads of one worker share it.
        self._lock = threading.Lock()

    @classmethod
    def load(cls) -> FaceMesh:
        """Open the bundled model; ImportError when mediapipe is not installed."""
        import mediapipe as mp

        graph = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=0.5,
        )
        mesh = cls(graph)
        # The first run builds the graph's TFLite interpreters; do it now, not in a request.
        mesh.landmarks(np.zeros((CROP_SIDE, CROP_SIDE, 3), dtype=np.uint8), (0, 0, 1, 1))
        return mesh

    def landmarks(
        self, image_bgr: ImageBGR, bbox: tuple[float, float, float, float]
    ) -> MeshLandmarks | None:
        """The mesh of the face in ``bbox``, or None when MediaPipe finds no face there."""
        height, width = image_bgr.shape[:2]
        x1, y1, x2, y2 = bbox
        side = max(x2 - x1, y2 - y1) * CROP_MARGIN
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        left, top = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
        right, bottom = min(width, int(cx + side / 2)), min(height, int(cy + side / 2))
        if right - left < 8 or bottom - top < 8:
            return None
        crop = image_bgr[top:bottom, left:right]
        scale = min(1.0, CROP_SIDE / max(crop.shape[:2]))
        if scale < 1.0:
            crop = np.asarray(
                cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA),
                dtype=np.uint8,
            )
        rgb = np.ascontiguousarray(crop[:, :, ::-1])
        with self._lock:
            result = self._graph.process(rgb)
        found = getattr(result, "multi_face_landmarks", None)
        if not found:
            return None
        h, w = crop.shape[:2]
        points = np.array([(p.x * w, p.y * h, p.z * w) for p in found[0].landmark])
        if points.shape != (MESH_POINTS, 3):
            return None
        points /= scale
        points[:, 0] += left
        points[:, 1] += top
        return MeshLandmarks(points=points)


_mesh: FaceMesh | None = None
_mesh_loaded = False
_mesh_pid: int | None = None
_mesh_lock = threading.Lock()


def get_face_mesh() -> FaceMesh | None:
    """The process's face mesh, loaded on first call; None when mediapipe is missing.

    A graph loaded before a fork (the worker's main process checks its models) is not
    reused in the child: MediaPipe's threads do not survive a fork, so each process
    loads its own.
    """
    global _mesh, _mesh_loaded, _mesh_pid
    with _mesh_lock:
        if not _mesh_loaded or _mesh_pid != os.getpid():
            _mesh_pid = os.getpid()
            try:
                _mesh = FaceMesh.load()
                log.info("face mesh: MediaPipe %s loaded", _mediapipe_version())
            except ImportError as exc:
                log.warning(
                    "face mesh unavailable (%s): head pose falls back to the 5-point estimate "
                    "and eyes_closed is not measured; install the facemesh extra",
                    exc,
                )
                _mesh = None
            _mesh_loaded = True
        return _mesh


def _mediapipe_version() -> str:
    import mediapipe as mp

    return str(getattr(mp, "__version__", "?"))
