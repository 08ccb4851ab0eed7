"""The face model pack: detector, ArcFace recognizer and optional 3D landmarks, loaded once.

A pack is an InsightFace-style folder of ONNX files (buffalo_l in production:
det_10g.onnx, w600k_r50.onnx, 1k3d68.onnx, 2d106det.onnx, genderage.onnx). Each file is
routed by ``insightface.model_zoo.get_model`` from its input/output shapes; we keep the
detector, the recognizer and, when present, the 68-point 3D landmark model (for head
pose). Only local files are ever opened: ``FaceAnalysis`` would try to download a pack
whose folder is missing, so it is not used.

InsightFace is imported inside functions so that importing this module (for
``DetectedFace``) stays cheap and ``shared`` never pulls it in.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.config import Settings, get_settings
from shared.errors import ErrorCode, ModelLoadError
from workers.inference.batched_detection import BatchedDetector, letterbox
from workers.inference.onnx_session import create_session, resolve_providers, session_options
from workers.inference.pose import HeadPose, pose_from_5_points, pose_from_landmark_3d_68

log = logging.getLogger(__name__)

ImageBGR = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float32]

DETECTION = "detection"
RECOGNITION = "recognition"
LANDMARK_3D_68 = "landmark_3d_68"

# The detector's own confidence cut. Faces below it are not returned at all, so the quality
# gate's min_det_score only bites when it is set above this.
DEFAULT_DET_THRESHOLD = 0.5
# Largest number of aligned faces handed to one recognizer run (bounds activation memory).
MAX_EMBED_BATCH = 64
# Characters of each file's sha256 kept in model_version.
_DIGEST_CHARS = 8


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One detected face, in the pixel coordinates of the image it was found in."""

    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2
    det_score: float
    kps: FloatArray  # (5, 2): image-left eye, image-right eye, nose tip, mouth corners
    landmark_3d_68: FloatArray | None = None  # (68, 3) when the pack has the 3D model
    pose: HeadPose | None = None

    @property
    def width(self) -> float:
        return self.bbox[2] - self.bbox[0]

    @property
    def height(self) -> float:
        return self.bbox[3] - self.bbox[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)


def file_digest(path: Path) -> str:
    """Short sha256 of a file's bytes (the first 8 hex characters)."""
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()[:_DIGEST_CHARS]


def pack_version(pack_name: str, files: Sequence[Path]) -> str:
    """``"<pack>:<stem>=<sha8>,..."`` over ``files`` sorted by name: same bytes, same string.

    Stored with every template: a template is only ever compared with embeddings of the
    same version, so any change to these files must (and does) change the string.
    """
    parts = [f"{f.stem}={file_digest(f)}" for f in sorted(files, key=lambda f: f.name)]
    return f"{pack_name}:{','.join(parts)}"


class FacePack:
    """A loaded pack. Build it with ``FacePack.load`` (or ``get_face_pack``), not directly."""

    def __init__(
        self,
        *,
        pack_dir: Path,
        detector: Any,
        recognizer: Any,
        landmark_3d: Any | None,
        det_size: int,
        embedding_dim: int,
        recognizer_batched: bool,
    ) -> None:
        self._pack_dir = pack_dir
        self._detector = detector
        self._recognizer = recognizer
        self._landmark_3d = landmark_3d
        self._det_size = det_size
        self._embedding_dim = embedding_dim
        self._recognizer_batched = recognizer_batched
        self._batcher: Callable[[list[Any]], Sequence[FloatArray]] | None = None
        # Cross-job detection (enable_batching): the opened graph and one batcher per input
        # side, since a batch must be one tensor (enrollment 640, probes 320 by default).
        self._make_batcher: Callable[[str, Callable[[list[Any]], Any]], Any] | None = None
        self._batched_detector: BatchedDetector | None = None
        self._detection_batchers: dict[int, Callable[[list[Any]], Sequence[Any]]] = {}
        self._detection_lock = threading.Lock()
        self._model_files = {
            DETECTION: Path(detector.model_file),
            RECOGNITION: Path(recognizer.model_file),
        }
        if landmark_3d is not None:
            self._model_files[LANDMARK_3D_68] = Path(landmark_3d.model_file)
        # Only the files that shape an embedding: the detector's keypoints drive alignment,
        # the recognizer computes it. Adding or updating the 3D landmark model (quality only)
        # must not orphan every stored template.
        self._model_version = pack_version(
            pack_dir.name, [self._model_files[DETECTION], self._model_files[RECOGNITION]]
        )

    # --- loading --------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        pack_dir: Path,
        *,
        det_size: int = 640,
        providers: list[str] | None = None,
        det_thresh: float = DEFAULT_DET_THRESHOLD,
    ) -> FacePack:
        """Load the ONNX files of ``pack_dir``; ``ModelLoadError`` when the pack is unusable."""
        pack_dir = Path(pack_dir).expanduser()
        if not pack_dir.is_dir():
            raise _invalid(
                pack_dir,
                f"face pack {pack_dir} does not exist or is not a directory (expected a folder "
                "of InsightFace ONNX models such as buffalo_l)",
            )
        onnx_files = sorted(pack_dir.glob("*.onnx"))
        if not onnx_files:
            raise _invalid(
                pack_dir,
                f"face pack {pack_dir} has no .onnx files (expected an SCRFD detector and "
                "an ArcFace recognizer such as det_10g.onnx and w600k_r50.onnx)",
            )
        resolved = resolve_providers(providers)
        models = _route_models(pack_dir, onnx_files, resolved)

        detector = models.get(DETECTION)
        if detector is None:
            raise _invalid(
                pack_dir,
                f"face pack {pack_dir} has no detection model (expected an SCRFD ONNX such as "
                "det_10g.onnx)",
            )
        recognizer = models.get(RECOGNITION)
        if recognizer is None:
            raise _invalid(
                pack_dir,
                f"face pack {pack_dir} has no recognition model (expected an ArcFace ONNX "
                "such as w600k_r50.onnx)",
            )
        if not getattr(detector, "use_kps", False):
            raise _invalid(
                pack_dir,
                f"face pack {pack_dir}: detector {Path(detector.model_file).name} gives no "
                "5-point landmarks, which face alignment needs (expected an SCRFD *_kps model)",
            )
        detector.prepare(0, input_size=(det_size, det_size), det_thresh=det_thresh)
        landmark_3d = models.get(LANDMARK_3D_68)
        if landmark_3d is not None:
            landmark_3d.prepare(0)
            # Landmark.get would also compute the pose itself, through numpy's lstsq without
            # rcond (a FutureWarning per face on numpy 1.x); pose.py does the same maths.
            landmark_3d.require_pose = False

        recognizer, batched = _batch_capable_recognizer(recognizer, providers)
        used = list(recognizer.session.get_providers())
        if dropped := [p for p in resolved if p not in used]:
            # ORT falls back to CPU when e.g. the CUDA libraries cannot be loaded. With an
            # explicit provider list that is an outage, not a fallback (as in onnx_session).
            if providers or get_settings().ort_providers:
                raise ModelLoadError(
                    ErrorCode.ONNX_PROVIDER_UNAVAILABLE,
                    f"face pack {pack_dir}: requested providers {dropped} could not be "
                    f"initialised (sessions got {used})",
                    requested=resolved,
                    used=used,
                )
            log.warning(
                "face pack %s: providers %s unavailable, running on %s", pack_dir, dropped, used
            )
        pack = cls(
            pack_dir=pack_dir,
            detector=detector,
            recognizer=recognizer,
            landmark_3d=landmark_3d,
            det_size=det_size,
            embedding_dim=_embedding_dim(recognizer),
            recognizer_batched=batched,
        )
        # SCRFD builds its fixed-size session on first use; do that now, not in a request.
        pack.detect(np.zeros((det_size, det_size, 3), dtype=np.uint8))
        log.info(
            "face pack %s: recognizer %s (dim %d, %s), 3D landmarks %s, providers %s",
            pack.model_version,
            pack._model_files[RECOGNITION].name,
            pack.embedding_dim,
            "batched" if batched else "one face per run",
            "yes" if landmark_3d is not None else "no",
            pack.providers,
        )
        return pack

    def relabelled(self, model_version: str) -> FacePack:
        """The same loaded models under another ``model_version`` label (sessions shared).

        For deployments that version models by release name rather than file hash, and for
        migration drills that re-embed with the same weights under a new version.
        """
        clone = copy.copy(self)
        clone._model_version = model_version
        return clone

    # --- properties -----------------------------------------------------------------------

    @property
    def pack_dir(self) -> Path:
        return self._pack_dir

    @property
    def model_name(self) -> str:
        """The pack folder's name, e.g. ``buffalo_l``."""
        return self._pack_dir.name

    @property
    def model_version(self) -> str:
        """Pack name plus a short sha256 of the detector and recognizer files."""
        return self._model_version

    @property
    def embedding_dim(self) -> int:
        return self._embedding_dim

    @property
    def providers(self) -> list[str]:
        """The execution providers the recognizer session actually runs on."""
        return list(self._recognizer.session.get_providers())

    @property
    def det_size(self) -> int:
        return self._det_size

    @property
    def has_landmark_3d(self) -> bool:
        return self._landmark_3d is not None

    @property
    def recognizer_batched(self) -> bool:
        """True when several faces go through the recognizer in one run."""
        return self._recognizer_batched

    @property
    def model_files(self) -> dict[str, Path]:
        """Task name (detection, recognition, landmark_3d_68) -> the ONNX file used."""
        return dict(self._model_files)

    # --- inference ------------------------------------------------------------------------

    def detect(
        self, image_bgr: ImageBGR, *, max_faces: int = 0, det_size: int | None = None
    ) -> list[DetectedFace]:
        """All faces above the detector threshold, largest box first (``max_faces`` 0 = all).

        ``det_size`` letterboxes to another detector input side than the pack's (the
        detector graph takes any multiple of 32): close-up selfies need far fewer pixels.
        """
        _check_image(image_bgr)
        size = det_size or self._det_size
        if size % 32:
            raise ValueError(f"detector input side must be a multiple of 32, got {size}")
        if self._batched_detector is not None:
            boxed = letterbox(image_bgr, size)  # in this job's thread, overlapping other jobs
            (outputs,) = self._detection_batcher(size)([boxed.tile])
            bboxes, kpss = self._batched_detector.decode(outputs, boxed, max_num=max_faces)
        else:
            bboxes, kpss = self._detector.detect(
                image_bgr, input_size=(size, size), max_num=max_faces
            )
        faces = [self._make_face(image_bgr, bboxes[i], kpss[i]) for i in range(bboxes.shape[0])]
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def _make_face(
        self, image_bgr: ImageBGR, row: npt.NDArray[np.float32], kps: FloatArray
    ) -> DetectedFace:
        bbox = (float(row[0]), float(row[1]), float(row[2]), float(row[3]))
        kps32 = np.ascontiguousarray(kps, dtype=np.float32)
        landmarks: FloatArray | None = None
        if self._landmark_3d is not None:
            from insightface.app.common import Face

            holder = Face(bbox=np.asarray(bbox, dtype=np.float32), kps=kps32, det_score=row[4])
            landmarks = np.asarray(self._landmark_3d.get(image_bgr, holder), dtype=np.float32)
            pose = pose_from_landmark_3d_68(landmarks, self._landmark_3d.mean_lmk)
        else:
            pose = pose_from_5_points(kps32)
        return DetectedFace(
            bbox=bbox, det_score=float(row[4]), kps=kps32, landmark_3d_68=landmarks, pose=pose
        )

    def enable_batching(self, make: Callable[[str, Callable[[list[Any]], Any]], Any]) -> None:
        """Run detector and recognizer through batchers shared by the jobs in this process.

        ``make(name, run)`` returns a callable taking a list of inputs and returning one
        output per input (``workers.inference.batcher.batcher_for``): aligned crops for
        the recognizer, letterboxed tiles for the detector. When the detector graph
        cannot be opened for batches, detection stays one image per run.
        """
        self._batcher = make(f"recognizer:{self.model_version}", self._recognize)
        self._batched_detector = BatchedDetector.open(self._detector, self.providers)
        self._make_batcher = make

    def _detection_batcher(self, size: int) -> Callable[[list[Any]], Sequence[Any]]:
        with self._detection_lock:
            batcher = self._detection_batchers.get(size)
            if batcher is None:
                assert self._make_batcher is not None and self._batched_detector is not None
                name = f"detector:{size}:{self.model_version}"
                batcher = self._make_batcher(name, self._batched_detector.run)
                self._detection_batchers[size] = batcher
            return batcher

    def _recognize(self, aligned: list[Any]) -> list[FloatArray]:
        """Raw recognizer rows for aligned crops: runs of at most ``MAX_EMBED_BATCH`` (or 1)."""
        step = MAX_EMBED_BATCH if self._recognizer_batched else 1
        rows: list[FloatArray] = []
        for i in range(0, len(aligned), step):
            out = np.asarray(self._recognizer.get_feat(aligned[i : i + step]), dtype=np.float32)
            rows.extend(out.reshape(len(aligned[i : i + step]), -1))
        return rows

    def embed(self, items: Sequence[tuple[ImageBGR, FloatArray]]) -> FloatArray:
        """L2-normalised embeddings (N, dim) of (image, 5-point keypoints) pairs.

        Each face is aligned with ArcFace's similarity transform onto the recognizer's
        input size; all faces then go through the recognizer together (in runs of at
        most ``MAX_EMBED_BATCH``) when it accepts batches, else one run per face. With
        batching enabled the crops join those of other jobs in flight (``enable_batching``).
        """
        if not items:
            return np.empty((0, self._embedding_dim), dtype=np.float32)
        from insightface.utils.face_align import norm_crop

        size = int(self._recognizer.input_size[0])
        aligned = []
        for image, kps in items:
            _check_image(image)
            points = np.asarray(kps, dtype=np.float32)
            if points.shape != (5, 2):
                raise ValueError(f"expected (5, 2) keypoints, got {points.shape}")
            aligned.append(norm_crop(image, points, image_size=size))
        rows = (self._batcher or self._recognize)(aligned)
        feats = np.asarray(rows, dtype=np.float32).reshape(len(aligned), -1)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        # A zero vector cannot be normalised; it stays zero and matches nothing.
        return np.ascontiguousarray(feats / np.maximum(norms, 1e-12), dtype=np.float32)


def _invalid(pack_dir: Path, message: str) -> ModelLoadError:
    return ModelLoadError(ErrorCode.MODEL_PACK_INVALID, message, pack_dir=str(pack_dir))


def _route_models(pack_dir: Path, onnx_files: list[Path], providers: list[str]) -> dict[str, Any]:
    """Task name -> model for the tasks we use; two models for one task is an error."""
    from insightface.model_zoo import get_model

    options = session_options()
    models: dict[str, Any] = {}
    for path in onnx_files:
        try:
            model = get_model(str(path), providers=providers, sess_options=options)
        except Exception as exc:  # ORT and onnx raise their own exception types
            message = f"face pack {pack_dir}: cannot load {path.name}: {exc}"
            raise _invalid(pack_dir, message) from exc
        task = getattr(model, "taskname", None)
        if task not in (DETECTION, RECOGNITION, LANDMARK_3D_68):
            # genderage, landmark_2d_106, inswapper or an unrecognised graph: not needed here.
            log.debug("face pack %s: ignoring %s (task %s)", pack_dir, path.name, task)
            continue
        if task in models:
            raise _invalid(
                pack_dir,
                f"face pack {pack_dir} has two {task} models "
                f"({Path(models[task].model_file).name}, {path.name}); keep exactly one",
            )
        models[task] = model
    return models


def _batch_capable_recognizer(recognizer: Any, providers: list[str] | None) -> tuple[Any, bool]:
    """The recognizer, re-opened with a free batch dimension when it was exported with batch 1.

    buffalo_l's w600k_r50 already takes any batch. Exports fixed at batch 1 (the test
    pack's MobileFaceNet) get their batch dimension opened by onnx_session, which checks
    batched against one-by-one outputs before trusting it; if that fails, faces are
    embedded one run each.
    """
    dim0 = recognizer.input_shape[0] if recognizer.input_shape else None
    if not (isinstance(dim0, int) and dim0 > 0):
        return recognizer, True
    if dim0 != 1:
        return recognizer, False
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    path = Path(recognizer.model_file)
    opened = create_session(
        path, providers=providers, open_batch=True, label=f"recognizer {path.name}"
    )
    if opened.fixed_batch is not None:
        log.warning("recognizer %s only runs one face at a time", path.name)
        return recognizer, False
    return ArcFaceONNX(model_file=str(path), session=opened.session), True


def _embedding_dim(recognizer: Any) -> int:
    """The recognizer's output width, from its declared shape or, when symbolic, one run."""
    shape = recognizer.output_shape
    if shape is not None and len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0:
        return int(shape[1])
    size = int(recognizer.input_size[0])
    probe = recognizer.get_feat([np.zeros((size, size, 3), dtype=np.uint8)])
    return int(np.asarray(probe).reshape(1, -1).shape[1])


def _check_image(image: Any) -> None:
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
        or image.shape[0] == 0
        or image.shape[1] == 0
    ):
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", None)
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got shape {shape} dtype {dtype}")


_cache: dict[tuple[str, int, tuple[str, ...] | None], FacePack] = {}
_cache_lock = threading.Lock()


def get_face_pack(settings: Settings | None = None) -> FacePack:
    """The process's pack for ``settings`` (face_pack_dir, face_det_size, ort_providers).

    Loaded on first call and shared afterwards; the lock makes concurrent first calls
    load it once. Call it after a worker forks, never before (ORT sessions do not survive
    a fork).
    """
    settings = settings or get_settings()
    providers = settings.ort_providers
    key = (
        str(Path(settings.face_pack_dir).expanduser().resolve()),
        settings.face_det_size,
        tuple(providers) if providers else None,
    )
    with _cache_lock:
        pack = _cache.get(key)
        if pack is None:
            pack = FacePack.load(
                settings.face_pack_dir,
                det_size=settings.face_det_size,
                providers=list(providers) if providers else None,
            )
            _cache[key] = pack
        return pack
