"""Prepare the crop bundle for the GPU host (runs here, on the CPU, with MediaPipe).

    python -m training.gpu.prepare_bundle DATA --out out/gpu_bundle [--input-size 260]

DATA is any layout ``faceauth train liveness`` reads (``--manifest`` / ``--celeba-spoof``
as there). Faces are found and cropped through the job's own crop cache (same detector,
same cache, same subject-disjoint splits), but wider than the model input by ``--margin``
so the host can jitter the crop (see ``bundle.py``). The bundle must fit the host's carry
limit (64 MiB with the code): ``--max-mib`` fails early and ``--max-images`` subsamples.
With the workers' face pack (``--serving-face-pack``, default ``FACEAUTH_FACE_PACK_DIR``)
the serving-crop calibration is measured here too and travels in ``bundle.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shared.face_crop import scaled_box
from training.cli import default_serving_face_pack
from training.gpu.bundle import SPLIT_CODES, CropBundle, write_bundle
from training.liveness.calibration import FacePackBoxDetector, calibrate, serving_crop
from training.liveness.data import load_samples
from training.liveness.preprocess import (
    CropCache,
    CropParams,
    CroppedSample,
    PreprocessResult,
    cache_key,
    preprocess,
)

log = logging.getLogger("training.gpu.prepare_bundle")

DEFAULT_MARGIN = 1.15  # room for +-10 % scale and +-5 % shift jitter around the model crop
DEFAULT_MAX_MIB = 48.0  # leaves room for the code within the host's 64 MiB carry limit


def prep_geometry(input_size: int, crop_scale: float, margin: float) -> tuple[int, float]:
    """(stored crop side, its crop_scale): the model crop is the centre input_size pixels."""
    size = round(input_size * margin)
    return size, crop_scale * size / input_size


def box_in_crop(
    box: Sequence[float], image_size: Sequence[int], prep_scale: float, size: int
) -> tuple[float, float, float, float]:
    """The face box in the stored crop's pixels (the crop window is ``scaled_box``'s)."""
    left, top, right, bottom = scaled_box(
        int(image_size[0]), int(image_size[1]), box, prep_scale, square=True
    )
    # crop_face resizes pixels left..right inclusive onto `size` pixels.
    sx, sy = size / (right - left + 1), size / (bottom - top + 1)
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1 - left) * sx, (y1 - top) * sy, (x2 - left) * sx, (y2 - top) * sy


def _image_size(meta: dict[str, Any], item: CroppedSample) -> tuple[int, int]:
    if "image_size" in meta:  # cached by crop_pixels since the field exists
        return int(meta["image_size"][0]), int(meta["image_size"][1])
    pixels = cv2.imread(str(item.sample.path), cv2.IMREAD_COLOR)
    if pixels is None:
        raise ValueError(f"{item.sample.path} cannot be read again to size its crop")
    return int(pixels.shape[1]), int(pixels.shape[0])


def _subsample(items: list[CroppedSample], limit: int | None) -> list[CroppedSample]:
    """At most ``limit`` items, picked by content hash (stable, unrelated to file order)."""
    if limit is None or len(items) <= limit:
        return items

    def rank(item: CroppedSample) -> str:
        return hashlib.sha256(f"bundle:{item.sample.content_hash}".encode()).hexdigest()

    return sorted(items, key=rank)[:limit]


def build_bundle(
    items: Sequence[CroppedSample],
    cache: CropCache,
    params: CropParams,
    *,
    input_size: int,
    crop_scale: float,
    meta: dict[str, Any],
) -> CropBundle:
    crops, boxes = [], []
    for item in items:
        assert item.sample.content_hash is not None  # usable crops were hashed
        cached = cache.get(cache_key(item.sample.content_hash, params))
        if cached is None:
            raise RuntimeError(f"crop cache lost the entry of {item.sample.path}")
        entry, png = cached
        crop = cv2.imread(str(png), cv2.IMREAD_COLOR)
        if crop is None or crop.shape != (params.input_size, params.input_size, 3):
            raise RuntimeError(f"cached crop {png} is unreadable; delete the cache")
        crops.append(crop)
        box = box_in_crop(
            entry["box"], _image_size(entry, item), params.crop_scale, params.input_size
        )
        boxes.append(box)
    return CropBundle(
        crops=np.stack(crops).astype(np.uint8),
        boxes=np.asarray(boxes, dtype=np.float32),
        labels=np.asarray([i.sample.label for i in items], dtype=np.int64),
        splits=np.asarray([SPLIT_CODES[i.sample.split] for i in items], dtype=np.int64),
        attack_types=tuple(i.sample.attack_type for i in items),
        input_size=input_size,
        crop_scale=crop_scale,
        meta=meta,
    )


def serving_crop_meta(
    prep: PreprocessResult, serving: FacePackBoxDetector | None, crop_scale: float, detector: str
) -> dict[str, Any]:
    """The exported crop (scale, shift) around serving's SCRFD boxes, and its evidence.

    Measured here, where both detectors run, exactly as ``faceauth train liveness`` does;
    the host only copies it into ``liveness.json``.
    """
    calibration = (
        calibrate(
            prep.box_matches,
            n_unmatched=prep.box_unmatched,
            train_crop_scale=crop_scale,
            serving_detector=serving.version,
            train_detector=f"mediapipe-blazeface-{detector}",
            serving_det_size=serving.det_size,
        )
        if serving is not None
        else None
    )
    scale, shift = serving_crop(crop_scale, calibration)
    return {
        "crop_scale": scale,
        "crop_shift": list(shift),
        "box_calibration": calibration.to_dict() if calibration is not None else None,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, nargs="?", help="dataset folder (or CelebA-Spoof root)")
    parser.add_argument("--manifest", type=Path, help="CSV manifest instead of a folder")
    parser.add_argument("--celeba-spoof", type=Path, action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("out/gpu_bundle"))
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/liveness/crop_cache"))
    parser.add_argument("--input-size", type=int, default=260)
    parser.add_argument("--crop-scale", type=float, default=1.6)
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
    parser.add_argument("--detector", choices=("short", "full", "auto"), default="auto")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--max-images", type=int, default=None, help="subsample to this many")
    parser.add_argument("--max-mib", type=float, default=DEFAULT_MAX_MIB)
    parser.add_argument(
        "--serving-face-pack",
        type=Path,
        default=None,
        help="the workers' InsightFace pack: calibrates the exported crop to its SCRFD boxes "
        "(default: FACEAUTH_FACE_PACK_DIR when that folder exists)",
    )
    parser.add_argument("--no-serving-face-pack", action="store_true")
    args = parser.parse_args(argv)
    if args.data is None and args.manifest is None and not args.celeba_spoof:
        parser.error("give a data folder, --manifest or --celeba-spoof")
    if args.margin < 1.0 or args.input_size < 32 or args.crop_scale < 1.0:
        parser.error("margin and crop scale must be >= 1 and the input size >= 32")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    started = time.monotonic()
    samples = load_samples(
        args.data, args.manifest, args.val_fraction, args.test_fraction, args.celeba_spoof
    )
    size, prep_scale = prep_geometry(args.input_size, args.crop_scale, args.margin)
    params = CropParams(prep_scale, size, args.detector, 0.5)
    pack = None if args.no_serving_face_pack else args.serving_face_pack
    if pack is None and not args.no_serving_face_pack:
        pack = default_serving_face_pack()
    serving = FacePackBoxDetector.load(pack) if pack is not None else None
    prep = preprocess(samples, params, args.cache_dir, serving=serving)
    serving_meta = serving_crop_meta(prep, serving, args.crop_scale, args.detector)
    items = _subsample(prep.usable, args.max_images)
    if not items:
        raise SystemExit("no usable face crops: nothing to bundle")
    meta = {
        "prep_crop_scale": prep_scale,
        "margin": args.margin,
        "detector": f"mediapipe-blazeface-{args.detector}",
        "serving_crop": serving_meta,
        "counts": {
            "images": len(samples),
            "usable": len(prep.usable),
            "unusable": dict(Counter(u.reason for u in prep.unusable)),
            "bundled": len(items),
            "per_split": dict(Counter(f"{i.sample.split}/{i.sample.attack_type}" for i in items)),
        },
    }
    bundle = build_bundle(
        items,
        CropCache(args.cache_dir),
        params,
        input_size=args.input_size,
        crop_scale=args.crop_scale,
        meta=meta,
    )
    n_bytes = write_bundle(args.out, bundle)
    mib = n_bytes / 2**20
    log.info(
        "bundle %s: %d crops of %dpx (%d unusable images left out), %.2f MiB, %.1fs "
        "(crop cache %d hits / %d misses)",
        args.out,
        len(items),
        size,
        len(prep.unusable),
        mib,
        time.monotonic() - started,
        prep.cache_hits,
        prep.cache_misses,
    )
    if mib > args.max_mib:
        log.error("bundle is %.1f MiB > --max-mib %.1f: use --max-images", mib, args.max_mib)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
