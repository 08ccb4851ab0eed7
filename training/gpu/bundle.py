"""The crop bundle carried to the GPU host: ``crops.npz`` plus ``bundle.json`` (numpy only).

Each crop is an augmentation-ready, *wider* square context crop (``prep_crop_scale`` =
``crop_scale`` x ``size`` / ``input_size``) of ``size`` pixels, BGR as OpenCV decodes, with
the detector's face box in crop pixels. Cropping that box at ``crop_scale`` to
``input_size`` (``shared.face_crop.crop_face``, as the workers do) gives the model's input;
the margin around it lets training jitter scale and position without inventing pixels.
Arrays are stored without pickle, so loading a bundle cannot run code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

BUNDLE_FORMAT = "faceauth-liveness-crops/1"
ARRAYS_FILE, META_FILE = "crops.npz", "bundle.json"
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class CropBundle:
    crops: npt.NDArray[np.uint8]  # (N, size, size, 3) BGR
    boxes: npt.NDArray[np.float32]  # (N, 4) face box x1, y1, x2, y2 in crop pixels
    labels: npt.NDArray[np.int64]  # 0 live, 1 spoof
    splits: npt.NDArray[np.int64]  # SPLIT_CODES
    attack_types: tuple[str, ...]
    input_size: int
    crop_scale: float  # the model's crop around the face box (the exported crop_scale)
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        n = len(self.crops)
        if self.crops.ndim != 4 or self.crops.shape[3] != 3 or self.crops.dtype != np.uint8:
            raise ValueError(f"crops must be (N, S, S, 3) uint8, got {self.crops.shape}")
        if not (len(self.boxes) == len(self.labels) == len(self.splits) == n):
            raise ValueError("crops, boxes, labels and splits differ in length")
        if len(self.attack_types) != n:
            raise ValueError("one attack type per crop is needed")
        if not set(np.unique(self.labels).tolist()) <= {0, 1}:
            raise ValueError("labels must be 0 (live) or 1 (spoof)")

    @property
    def size(self) -> int:
        return int(self.crops.shape[1])

    def indices(self, split: str) -> npt.NDArray[np.int64]:
        return np.flatnonzero(self.splits == SPLIT_CODES[split]).astype(np.int64)


def write_bundle(folder: Path, bundle: CropBundle) -> int:
    """Write the bundle; returns its size in bytes (what the GPU host must carry)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = folder / ARRAYS_FILE
    tmp = folder / f".tmp.{ARRAYS_FILE}"
    with tmp.open("wb") as fh:
        np.savez_compressed(
            fh,
            crops=bundle.crops,
            boxes=bundle.boxes.astype(np.float32),
            labels=bundle.labels.astype(np.int8),
            splits=bundle.splits.astype(np.int8),
        )
    tmp.replace(arrays)
    meta = {
        **bundle.meta,
        "format": BUNDLE_FORMAT,
        "n": len(bundle.crops),
        "size": bundle.size,
        "input_size": bundle.input_size,
        "crop_scale": bundle.crop_scale,
        "attack_types": list(bundle.attack_types),
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return sum(p.stat().st_size for p in (arrays, folder / META_FILE))


def read_bundle(folder: Path) -> CropBundle:
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{folder} is not a {BUNDLE_FORMAT} bundle")
    with np.load(folder / ARRAYS_FILE, allow_pickle=False) as arrays:
        crops, boxes = arrays["crops"], arrays["boxes"]
        labels, splits = arrays["labels"], arrays["splits"]
    return CropBundle(
        crops=np.ascontiguousarray(crops, dtype=np.uint8),
        boxes=np.asarray(boxes, dtype=np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        splits=np.asarray(splits, dtype=np.int64),
        attack_types=tuple(str(a) for a in meta["attack_types"]),
        input_size=int(meta["input_size"]),
        crop_scale=float(meta["crop_scale"]),
        meta=meta,
    )
