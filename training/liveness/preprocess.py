"""Face detection (MediaPipe BlazeFace) and square context crops, cached on disk.

Every input image ends up either as a cached crop or in the list of unusable images with a
reason; nothing is dropped silently. The cache key is the file's content hash plus every
parameter that changes the crop, so a changed parameter never reuses a stale crop and a
renamed file still hits.

With a serving detector (the workers' SCRFD face pack), each usable face is also measured
against that detector's box of the same face (``calibration.py``); the measurement is cached
beside the crop under the same key scheme plus the serving detector's tag, so adding or
changing the serving pack re-runs only SCRFD, never MediaPipe.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from shared.config import get_settings
from shared.errors import FaceauthError
from shared.face_crop import crop_face
from training.liveness.calibration import BoxMatch, ServingBoxDetector, match_box
from training.liveness.config import DetectorChoice
from training.liveness.data import Sample

_CACHE_FORMAT = "faceauth-liveness-crop/1"
# A face whose box reaches well outside the frame is cut off: serving refuses such faces at
# the quality gate, and its crop is the image edge rather than the face surface. 0.85 keeps a
# face that merely touches the border and rejects e.g. faces/edge/obama_partial_face.jpg (0.78).
MIN_BOX_INSIDE_FRACTION = 0.85
MIN_FACE_SIDE_PX = 16

# Reasons an image is unusable (stable strings: they appear in the CSV/JSON report).
REASON_UNREADABLE = "unreadable"
REASON_NO_FACE = "no_face"
REASON_FACE_CUT_OFF = "face_cut_off"
REASON_FACE_TOO_SMALL = "face_too_small"

_BOX_UNREADABLE = "unreadable"  # the file was cropped before but cannot be read now

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    box: Box  # x1, y1, x2, y2 in pixels (may reach outside the image)
    score: float
    detector: str  # "short" or "full"


@dataclass(frozen=True)
class CropParams:
    crop_scale: float
    input_size: int
    detector: DetectorChoice
    min_detection_confidence: float

    def cache_tag(self) -> str:
        return (
            f"{_CACHE_FORMAT}|scale={self.crop_scale:.4f}|size={self.input_size}|square=1"
            f"|det={self.detector}|conf={self.min_detection_confidence:.3f}"
            f"|inside={MIN_BOX_INSIDE_FRACTION}|minside={MIN_FACE_SIDE_PX}"
        )


@dataclass(frozen=True)
class CroppedSample:
    sample: Sample
    crop_path: Path  # PNG, BGR as OpenCV writes it, input_size x input_size
    detection_score: float


@dataclass(frozen=True)
class UnusableImage:
    sample: Sample
    reason: str
    detail: str


@dataclass(frozen=True)
class PreprocessResult:
    usable: list[CroppedSample]
    unusable: list[UnusableImage]
    cache_hits: int
    cache_misses: int
    # Only filled when a serving detector was given: one match per usable face it also found.
    box_matches: list[BoxMatch] = field(default_factory=list)
    box_unmatched: int = 0  # usable faces the serving detector missed (or saw elsewhere)
    box_cache_hits: int = 0
    box_cache_misses: int = 0


class MediaPipeFaceDetector:
    """BlazeFace via ``mp.solutions.face_detection`` (model 0 short-range, 1 full-range)."""

    def __init__(self, choice: DetectorChoice, min_detection_confidence: float) -> None:
        import mediapipe as mp  # local: importing mediapipe is slow and only training needs it

        order = {"short": ["short"], "full": ["full"], "auto": ["short", "full"]}[choice]
        self._detectors: list[tuple[str, Any]] = [
            (
                name,
                mp.solutions.face_detection.FaceDetection(
                    model_selection=0 if name == "short" else 1,
                    min_detection_confidence=min_detection_confidence,
                ),
            )
            for name in order
        ]

    def detect(self, image_rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        """All faces from the first model (in order) that finds any."""
        h, w = image_rgb.shape[:2]
        for name, detector in self._detectors:
            result = detector.process(image_rgb)
            found = []
            for det in result.detections or []:
                rel = det.location_data.relative_bounding_box
                x1, y1 = rel.xmin * w, rel.ymin * h
                box = (x1, y1, x1 + rel.width * w, y1 + rel.height * h)
                found.append(Detection(box, float(det.score[0]), name))
            if found:
                return found
        return []

    def close(self) -> None:
        for _, detector in self._detectors:
            detector.close()

    def __enter__(self) -> MediaPipeFaceDetector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


DetectFn = Callable[[npt.NDArray[np.uint8]], list[Detection]]


def _box_area(box: Box) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def choose_face(detections: Sequence[Detection], width: int, height: int) -> Detection | str:
    """The largest face, or the reason why there is no usable one."""
    if not detections:
        return REASON_NO_FACE
    best = max(detections, key=lambda d: _box_area(d.box))
    x1, y1, x2, y2 = best.box
    inside = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    area = _box_area(best.box)
    if area <= 0 or _box_area(inside) / area < MIN_BOX_INSIDE_FRACTION:
        return REASON_FACE_CUT_OFF
    if min(inside[2] - inside[0], inside[3] - inside[1]) < MIN_FACE_SIDE_PX:
        return REASON_FACE_TOO_SMALL
    return Detection(inside, best.score, best.detector)


def cache_key(content_hash: str, params: CropParams) -> str:
    return hashlib.sha256(f"{content_hash}|{params.cache_tag()}".encode()).hexdigest()


def box_cache_key(content_hash: str, params: CropParams, serving_tag: str) -> str:
    """The crop's key scheme plus the serving detector: its boxes depend on both."""
    text = f"{content_hash}|{params.cache_tag()}|{serving_tag}"
    return hashlib.sha256(text.encode()).hexdigest()


class CropCache:
    """``<dir>/<key[:2]>/<key>.json`` records the outcome; ``<key>.png`` holds a usable crop."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / key[:2]
        return folder / f"{key}.json", folder / f"{key}.png"

    def get(self, key: str) -> tuple[dict[str, Any], Path] | None:
        meta_path, png_path = self._paths(key)
        if not meta_path.is_file():
            return None
        try:
            meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # a torn write from a killed run: recompute
        if meta.get("status") == "ok" and not png_path.is_file():
            return None
        return meta, png_path

    def put(self, key: str, meta: dict[str, Any], crop_bgr: npt.NDArray[np.uint8] | None) -> Path:
        meta_path, png_path = self._paths(key)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        if crop_bgr is not None:
            ok, encoded = cv2.imencode(".png", crop_bgr)
            if not ok:
                raise RuntimeError("PNG encoding of a crop failed")
            _atomic_write(png_path, encoded.tobytes())
        # The JSON is written last: its presence marks a complete entry.
        _atomic_write(meta_path, json.dumps(meta, sort_keys=True).encode())
        return png_path


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _decode(path: Path) -> npt.NDArray[np.uint8] | str:
    """BGR pixels through the workers' own decoder, or the reason why not."""
    from shared.imaging import decode_image

    settings = get_settings()
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    try:
        return decode_image(
            data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        ).pixels
    except FaceauthError as exc:
        return f"{exc.code}: {exc.message}"


def crop_one(
    sample: Sample, params: CropParams, detect: DetectFn
) -> tuple[dict[str, Any], npt.NDArray[np.uint8] | None]:
    """Detect and crop one image: (cache metadata, BGR crop or None when unusable)."""
    return crop_pixels(_decode(sample.path), params, detect)


def crop_pixels(
    pixels: npt.NDArray[np.uint8] | str, params: CropParams, detect: DetectFn
) -> tuple[dict[str, Any], npt.NDArray[np.uint8] | None]:
    """``crop_one`` on already decoded BGR pixels (or the reason they could not be decoded)."""
    if isinstance(pixels, str):
        return {"status": "unusable", "reason": REASON_UNREADABLE, "detail": pixels}, None
    h, w = pixels.shape[:2]
    rgb: npt.NDArray[np.uint8] = np.ascontiguousarray(pixels[..., ::-1])  # MediaPipe wants RGB
    detections = detect(rgb)
    chosen = choose_face(detections, w, h)
    if isinstance(chosen, str):
        detail = f"{len(detections)} detection(s) in a {w}x{h} image"
        return {"status": "unusable", "reason": chosen, "detail": detail}, None
    size = (params.input_size, params.input_size)
    crop = crop_face(pixels, chosen.box, params.crop_scale, size, square=True)
    meta = {
        "status": "ok",
        "image_size": [w, h],  # lets a bundle map the box into crop pixels without decoding
        "box": [round(v, 2) for v in chosen.box],
        "score": round(chosen.score, 4),
        "detector": chosen.detector,
        "faces": len(detections),
    }
    return meta, crop


def measure_serving_box(
    pixels: npt.NDArray[np.uint8] | str, train_box: Sequence[float], serving: ServingBoxDetector
) -> dict[str, Any]:
    """Cache metadata of the serving detector's box for the face at ``train_box``."""
    if isinstance(pixels, str):
        return {"status": _BOX_UNREADABLE, "faces": 0, "detail": pixels}
    boxes = serving.boxes(pixels)
    match = match_box(train_box, boxes)
    if match is None:
        return {"status": "unmatched", "faces": len(boxes)}
    return {"status": "matched", "faces": len(boxes), **match.to_meta()}


@dataclass
class _BoxTally:
    matches: list[BoxMatch] = field(default_factory=list)
    unmatched: int = 0
    hits: int = 0
    misses: int = 0


def _serving_match(
    cache: CropCache,
    key: str,
    serving: ServingBoxDetector,
    sample: Sample,
    train_box: Sequence[float],
    pixels: npt.NDArray[np.uint8] | str | None,
    tally: _BoxTally,
) -> None:
    cached = cache.get(key)
    if cached is not None:
        tally.hits += 1
        meta = cached[0]
    else:
        tally.misses += 1
        meta = measure_serving_box(
            _decode(sample.path) if pixels is None else pixels, train_box, serving
        )
        if meta["status"] != _BOX_UNREADABLE:  # a read error may be passing: retry next run
            cache.put(key, meta, None)
    if meta.get("status") == "matched":
        tally.matches.append(BoxMatch.from_meta(meta))
    else:
        tally.unmatched += 1


def preprocess(
    samples: Sequence[Sample],
    params: CropParams,
    cache_dir: Path,
    detect: DetectFn | None = None,
    *,
    serving: ServingBoxDetector | None = None,
    progress: bool = True,
) -> PreprocessResult:
    """Crop every sample (from cache when possible); unusable images are collected, not lost.

    ``detect`` defaults to a MediaPipe detector, which is only built on the first cache miss.
    With ``serving``, every usable face is also matched against that detector's boxes
    (``PreprocessResult.box_matches``), from the cache when possible.
    """
    cache = CropCache(cache_dir)
    usable: list[CroppedSample] = []
    unusable: list[UnusableImage] = []
    hits = misses = 0
    tally = _BoxTally()
    owned: MediaPipeFaceDetector | None = None
    try:
        for sample in tqdm(samples, desc="crop faces", unit="img", disable=not progress):
            if sample.content_hash is None:  # unreadable: nothing to hash, nothing to cache
                unusable.append(UnusableImage(sample, REASON_UNREADABLE, "file cannot be read"))
                continue
            key = cache_key(sample.content_hash, params)
            cached = cache.get(key)
            pixels: npt.NDArray[np.uint8] | str | None = None  # decoded at most once
            if cached is not None:
                hits += 1
                meta, png_path = cached
            else:
                misses += 1
                if detect is None:
                    owned = MediaPipeFaceDetector(params.detector, params.min_detection_confidence)
                    detect = owned.detect
                pixels = _decode(sample.path)
                meta, crop = crop_pixels(pixels, params, detect)
                png_path = cache.put(key, meta, crop)
            if meta.get("status") == "ok":
                usable.append(CroppedSample(sample, png_path, float(meta.get("score", 0.0))))
                if serving is not None:
                    # The cached (rounded) box, so a cold and a warm cache measure alike.
                    box_key = box_cache_key(sample.content_hash, params, serving.cache_tag)
                    train_box = [float(v) for v in meta["box"]]
                    _serving_match(cache, box_key, serving, sample, train_box, pixels, tally)
            else:
                reason = str(meta.get("reason", REASON_NO_FACE))
                unusable.append(UnusableImage(sample, reason, str(meta.get("detail", ""))))
    finally:
        if owned is not None:
            owned.close()
    return PreprocessResult(
        usable, unusable, hits, misses, tally.matches, tally.unmatched, tally.hits, tally.misses
    )
