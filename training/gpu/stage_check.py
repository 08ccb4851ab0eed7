"""Export on the GPU host and the check that the workers' liveness stage scores the model.

The host has no pydantic, so ``liveness.json`` is written here as plain JSON mirroring
``shared.liveness_spec`` (the CPU tests check it equals ``export.build_spec``'s output and
loads in the workers). The check scores faces through the workers' own stage
(``LivenessScorer``) where ``workers`` imports, else through a standalone twin of it that
reads ``liveness.json`` and crops with the stage's own ``shared.face_crop.crop_face``; the
scores must equal torch's on the very tensors the stage built.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from training.liveness.model import (
    COLOR_ORDER,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LIVE_CLASS_INDEX,
    PIXEL_SCALE,
)
from training.liveness.onnx_io import (
    MAX_SOFTMAX_DIFF,
    embed_metadata,
    max_softmax_diff,
    softmax,
    torch_onnx_export,
)

log = logging.getLogger(__name__)

# Mirrors shared.liveness_spec (which needs pydantic, absent on the host).
LIVENESS_FORMAT = "faceauth-liveness/1"
SPEC_FILENAME = "liveness.json"
ONNX_METADATA_KEY = "faceauth_liveness"
ONNX_FILE = "liveness_efficientnet_b2.onnx"
SCORE_TOLERANCE = MAX_SOFTMAX_DIFF  # stage (ORT) vs torch spoof score on identical tensors

FloatArray = npt.NDArray[np.float32]
Box = tuple[float, float, float, float]
Faces = list[tuple[npt.NDArray[np.uint8], Box]]


def host_spec(
    *,
    name: str,
    version: str,
    input_size: int,
    crop_scale: float,
    threshold: float,
    training: dict[str, Any],
    metrics: dict[str, Any],
    crop_shift: tuple[float, float] = (0.0, 0.0),
) -> dict[str, Any]:
    """``liveness.json`` as ``training.liveness.export.build_spec`` writes it.

    ``crop_scale``/``crop_shift`` are the serving crop measured by ``prepare_bundle``
    against the workers' SCRFD boxes (or the training crop when it had no face pack)."""
    member: dict[str, Any] = {
        "file": ONNX_FILE,
        "crop_scale": crop_scale,
        "square": True,
        "input_width": input_size,
        "input_height": input_size,
        "color_order": COLOR_ORDER,
        "pixel_scale": PIXEL_SCALE,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "live_class_index": LIVE_CLASS_INDEX,
    }
    if tuple(crop_shift) != (0.0, 0.0):  # the contract omits a zero shift
        member["crop_shift"] = [float(crop_shift[0]), float(crop_shift[1])]
    return {
        "format": LIVENESS_FORMAT,
        "name": name,
        "version": version,
        "combine": "mean",
        "members": [member],
        "default_threshold": threshold,
        "training": json.loads(json.dumps(training)),
        "metrics": json.loads(json.dumps(metrics)),
    }


def serving_boxes(
    train_boxes: list[Box], crop_scale: float, crop_shift: tuple[float, float], model_scale: float
) -> list[Box]:
    """Boxes a calibrated serving detector would give, for the check of the stage's crop.

    The bundle holds the training detector's boxes only. A serving box is ``model_scale /
    crop_scale`` times the training box's square side and centred ``crop_shift`` of its side
    away, which is what calibration measured on average; cropped with the exported
    ``crop_scale`` and ``crop_shift`` it shows the training crop again.
    """
    ratio = model_scale / crop_scale
    out = []
    for x1, y1, x2, y2 in train_boxes:
        side = max(x2 - x1, y2 - y1) * ratio
        cx = (x1 + x2) / 2.0 - crop_shift[0] * side
        cy = (y1 + y2) / 2.0 - crop_shift[1] * side
        out.append((cx - side / 2.0, cy - side / 2.0, cx + side / 2.0, cy + side / 2.0))
    return out


def export_model(model: nn.Module, folder: Path, spec: dict[str, Any], check: FloatArray) -> float:
    """ONNX + liveness.json into ``folder``; returns the ORT-vs-torch max softmax difference."""
    folder.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(model).to("cpu").to(memory_format=torch.contiguous_format).eval()
    tmp = folder / f".{ONNX_FILE}.tmp"
    spec_json = json.dumps(spec, indent=2)
    torch_onnx_export(cpu_model, tmp, spec["members"][0]["input_width"])
    embed_metadata(tmp, ONNX_METADATA_KEY, spec_json)
    diff = max_softmax_diff(cpu_model, tmp, np.ascontiguousarray(check))
    if not diff < MAX_SOFTMAX_DIFF:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ONNX Runtime and torch disagree: max softmax diff {diff:.2e}")
    tmp.replace(folder / ONNX_FILE)
    (folder / SPEC_FILENAME).write_text(spec_json + "\n", encoding="utf-8")
    return diff


def stage_scores_worker(folder: Path, faces: Faces) -> tuple[FloatArray, list[float], str]:
    """The workers' liveness stage itself: load the folder, score faces (crop from boxes)."""
    from workers.inference.liveness import LivenessScorer

    scorer = LivenessScorer.load(folder, providers=["CPUExecutionProvider"])
    inputs = scorer.model_inputs(faces)[0]
    scores = [s.spoof_score for s in scorer.score_many(faces)]
    return inputs, scores, f"workers.inference.liveness.LivenessScorer ({scorer.version})"


def stage_scores_standalone(folder: Path, faces: Faces) -> tuple[FloatArray, list[float], str]:
    """The stage's contract without its pydantic stack: the same steps, from liveness.json.

    Reads the member from ``liveness.json``, probes the model with a blank input as the
    stage does at load, crops each face with ``shared.face_crop.crop_face`` (the stage's own
    crop function), orders colours, scales and normalises, runs ONNX Runtime on the CPU and
    takes 1 - the live-class softmax as the spoof score.
    """
    import onnxruntime as ort

    from shared.face_crop import crop_face

    spec = json.loads((folder / SPEC_FILENAME).read_text(encoding="utf-8"))
    if spec.get("format") != LIVENESS_FORMAT or len(spec.get("members", [])) != 1:
        raise RuntimeError(f"{folder / SPEC_FILENAME} is not a one-member {LIVENESS_FORMAT}")
    member = spec["members"][0]
    session = ort.InferenceSession(str(folder / member["file"]), providers=["CPUExecutionProvider"])
    h, w = int(member["input_height"]), int(member["input_width"])
    name = session.get_inputs()[0].name
    probe = session.run(None, {name: np.zeros((1, 3, h, w), dtype=np.float32)})[0]
    if probe.shape[0] != 1 or probe.shape[1] <= member["live_class_index"]:
        raise RuntimeError(f"blank probe gave logits of shape {probe.shape}")
    shift = tuple(member.get("crop_shift", (0.0, 0.0)))
    crops = np.stack(
        [
            crop_face(img, box, member["crop_scale"], (w, h), square=member["square"], shift=shift)
            for img, box in faces
        ]
    )
    if member["color_order"] == "RGB":
        crops = crops[..., ::-1]
    x = crops.astype(np.float32) * np.float32(member["pixel_scale"])
    x = (x - np.asarray(member["mean"], np.float32)) / np.asarray(member["std"], np.float32)
    inputs = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
    logits = session.run(None, {name: inputs})[0]
    live = softmax(logits)[:, member["live_class_index"]]
    return inputs, [float(1.0 - p) for p in live], "standalone twin of the stage (no pydantic)"


def check_stage(model: nn.Module, folder: Path, faces: Faces, mode: str) -> dict[str, Any]:
    """Score ``faces`` through the stage (or its twin) and compare with torch on its inputs."""
    how = mode
    if mode in ("auto", "worker"):
        try:
            inputs, scores, used = stage_scores_worker(folder, faces)
            how = "worker"
        except ImportError as exc:  # the host lacks pydantic & co.
            if mode == "worker":
                raise
            log.info("workers' stage not importable here (%s): standalone check", exc)
            how = "standalone"
    if how == "standalone":
        inputs, scores, used = stage_scores_standalone(folder, faces)
    cpu_model = copy.deepcopy(model).to("cpu").to(memory_format=torch.contiguous_format).eval()
    with torch.no_grad():
        torch_logits = cpu_model(torch.from_numpy(inputs)).numpy()
    torch_scores = 1.0 - softmax(torch_logits)[:, LIVE_CLASS_INDEX]
    diff = float(np.abs(np.asarray(scores) - torch_scores).max())
    if not (diff < SCORE_TOLERANCE and all(0.0 <= s <= 1.0 for s in scores)):
        raise RuntimeError(f"stage scores differ from torch by {diff:.2e} ({used})")
    return {
        "mode": how,
        "stage": used,
        "faces": len(faces),
        "max_score_diff": diff,
        "inputs": inputs,
    }
