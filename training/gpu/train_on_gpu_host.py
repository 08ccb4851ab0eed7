"""Train the liveness model on a GPU host from a crop bundle, export ONNX, check it loads.

    python -m training.gpu.train_on_gpu_host --bundle out/gpu_bundle --out /tmp/liveness_run
    python -m training.gpu.train_on_gpu_host --bundle out/gpu_bundle --out /tmp/q --quick  # CPU

Made for a host with Python 3.12, torch (CUDA), timm, safetensors, onnx, CPU ONNX Runtime,
numpy and OpenCV, and nothing else: no MediaPipe (crops come prepared, ``prepare_bundle``),
no pydantic (the deployable ``liveness.json`` is written as plain JSON here and validated by
the workers' own loader wherever it imports), no network (pretrained weights only from a
local ``--imagenet-weights`` safetensors file; timm never downloads).

What it does, within ``--budget-s`` (default 200 s, under the 4 minutes a run may take):

1. loads the whole bundle onto the device (a few hundred crops fit in GPU memory, so no
   DataLoader workers are needed here; ``faceauth train liveness`` is the streaming path);
2. trains EfficientNet-B2 for up to ``--epochs`` with the job's optimiser (Adam, cosine,
   dropout 0.3), mixed precision (bf16, or fp16 with a gradient scaler) and channels-last
   on CUDA, and on-device augmentation: each step crops every face afresh from its wider
   bundle crop with random scale (+-10 %), shift (+-5 %) and a horizontal flip; no colour
   or blur jitter, which would erase print and screen artefacts. It stops starting epochs
   when the next one would overrun the budget;
3. keeps the epoch with the lowest validation loss, evaluates it (ISO/IEC 30107-3 metrics
   per attack species) on the test split, exports ONNX with the liveness contract embedded
   and checks ONNX Runtime against torch;
4. scores bundle faces through the workers' liveness stage (``LivenessScorer``: crop from
   the face box, normalise, ONNX Runtime) when ``workers`` imports there, else through a
   standalone twin of that stage that reads ``liveness.json`` and crops with the same
   ``shared.face_crop`` function (``--check``); either way the scores must equal torch's
   on the same tensors.

Everything lands in ``--out``: ``model/`` (deployable), ``report.json`` (timings, metrics,
which check ran), ``epoch_log.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from training.gpu.augment import SCALE_JITTER, SHIFT_JITTER, Augmenter
from training.gpu.bundle import CropBundle, read_bundle
from training.gpu.stage_check import check_stage, export_model, host_spec, serving_boxes
from training.liveness.accel import AmpPlan, autocast, epoch_seed, make_scaler, plan_amp
from training.liveness.balance import class_loss_weights, sample_weights
from training.liveness.evaluate import evaluate_scores
from training.liveness.model import (
    ARCHITECTURE,
    SPOOF_CLASS_INDEX,
    build_model,
    normalise_bgr_batch,
    pick_device,
)

log = logging.getLogger("training.gpu.train_on_gpu_host")

EXPORT_RESERVE_S = 45.0  # export + ORT check + stage check on the host's CPU
# Mean |difference| per face (normalised units) between the stage's input and the evaluated
# crop: 0 uncalibrated; ~0.05 from pixel rounding when calibrated; a wrong window is >= 0.3.
MAX_INPUT_DRIFT = 0.2


@dataclass(frozen=True)
class EvalSet:
    """Faces of one split as the serving crop makes them, plus what to score them with."""

    index: npt.NDArray[np.int64]
    inputs: torch.Tensor  # (N, 3, H, W) float32 on the CPU, normalised
    labels: list[int]
    attack_types: list[str]


def face_boxes(bundle: CropBundle) -> list[tuple[float, float, float, float]]:
    return [(float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in bundle.boxes]


def serving_crops(bundle: CropBundle, index: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    """The model-input crops of ``index``: the bundle crop cut as the workers cut a frame."""
    from shared.face_crop import crop_face  # cv2 + numpy only: importable on the host

    size = (bundle.input_size, bundle.input_size)
    boxes = face_boxes(bundle)
    return np.stack(
        [crop_face(bundle.crops[i], boxes[i], bundle.crop_scale, size, square=True) for i in index]
    )


def eval_set(bundle: CropBundle, split: str) -> EvalSet:
    index = bundle.indices(split)
    inputs = (
        torch.from_numpy(normalise_bgr_batch(serving_crops(bundle, index)))
        if len(index)
        else torch.empty(0, 3, bundle.input_size, bundle.input_size)
    )
    return EvalSet(
        index=index,
        inputs=inputs,
        labels=[int(bundle.labels[i]) for i in index],
        attack_types=[bundle.attack_types[i] for i in index],
    )


@torch.no_grad()
def predict(
    model: nn.Module, data: EvalSet, device: torch.device, plan: AmpPlan, batch_size: int
) -> tuple[float, list[float]]:
    """(mean cross-entropy, spoof scores) of an evaluation set."""
    model.eval()
    total, scores = 0.0, []
    labels = torch.as_tensor(data.labels, dtype=torch.long)
    for start in range(0, len(data.labels), batch_size):
        x = data.inputs[start : start + batch_size].to(device, non_blocking=True)
        if plan.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(plan):
            logits = model(x).float()
        y = labels[start : start + batch_size].to(device)
        total += float(F.cross_entropy(logits, y, reduction="sum").item())
        scores.extend(torch.softmax(logits, dim=1)[:, SPOOF_CLASS_INDEX].cpu().tolist())
    return (total / len(data.labels) if data.labels else float("nan")), scores


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    parser.add_argument("--balance", choices=("none", "sampler", "loss"), default="none")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--budget-s", type=float, default=200.0, help="wall-clock budget")
    parser.add_argument("--max-steps-per-epoch", type=int, default=None)
    parser.add_argument(
        "--imagenet-weights", type=Path, default=None, help="local efficientnet_b2 safetensors"
    )
    parser.add_argument("--check", choices=("auto", "worker", "standalone"), default="auto")
    parser.add_argument("--version", default=None)
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: --device cpu, 1 epoch")
    args = parser.parse_args(argv)
    if args.quick:
        args.device, args.epochs = "cpu", 1
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("epochs and batch size must be >= 1")
    return args


def _draw_order(
    train_idx: npt.NDArray[np.int64], labels: Sequence[int], balance: str, gen: torch.Generator
) -> torch.Tensor:
    if balance == "sampler":
        weights = torch.as_tensor(sample_weights(labels), dtype=torch.double)
        picks = torch.multinomial(weights, len(labels), replacement=True, generator=gen)
    else:
        picks = torch.randperm(len(labels), generator=gen)
    return torch.as_tensor(train_idx)[picks]


def train(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    timings: dict[str, float] = {}
    device = pick_device(args.device)
    plan = plan_amp(device, args.precision)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    bundle = read_bundle(args.bundle)
    train_idx = bundle.indices("train")
    train_labels = [int(bundle.labels[i]) for i in train_idx]
    if set(train_labels) != {0, 1}:
        raise SystemExit("the bundle's train split must hold live and spoof crops")
    val, test = eval_set(bundle, "val"), eval_set(bundle, "test")
    if not val.labels:
        raise SystemExit("the bundle has no validation crops")
    augment = Augmenter(bundle, device)
    timings["load_s"] = time.monotonic() - started

    model = build_model(args.dropout, args.imagenet_weights).to(device)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weight = class_loss_weights(train_labels).to(device) if args.balance == "loss" else None
    criterion = nn.CrossEntropyLoss(weight=weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    scaler = make_scaler(plan)
    log.info(
        "%s on %s (%s): %d train / %d val / %d test crops of %dpx -> %dpx",
        ARCHITECTURE,
        device,
        plan.name,
        len(train_idx),
        len(val.labels),
        len(test.labels),
        bundle.size,
        bundle.input_size,
    )

    gen = torch.Generator()
    best_loss, best_epoch, best_state = math.inf, 0, None
    epoch_log: list[dict[str, Any]] = []
    slowest = 0.0
    steps_per_epoch = (
        max(1, len(train_idx) // args.batch_size) if len(train_idx) > args.batch_size else 1
    )
    if args.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, args.max_steps_per_epoch)
    stopped_for_budget = False
    for epoch in range(1, args.epochs + 1):
        elapsed = time.monotonic() - started
        if epoch > 1 and elapsed + slowest + EXPORT_RESERVE_S > args.budget_s:
            log.info("stopping before epoch %d: it would overrun --budget-s", epoch)
            stopped_for_budget = True
            break
        tic = time.monotonic()
        seed = epoch_seed(args.seed, epoch)
        gen.manual_seed(seed)
        torch.manual_seed(seed)
        order = _draw_order(train_idx, train_labels, args.balance, gen)
        model.train()
        total, seen = 0.0, 0
        for step in range(steps_per_epoch):
            batch = order[step * args.batch_size : (step + 1) * args.batch_size]
            x = augment(batch, gen)
            if plan.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.as_tensor(bundle.labels[batch.numpy()], dtype=torch.long).to(device)
            optimizer.zero_grad(set_to_none=True)
            with autocast(plan):
                loss = criterion(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.item()) * len(batch)
            seen += len(batch)
        scheduler.step()
        val_loss, val_scores = predict(model, val, device, plan, args.batch_size)
        improved = val_loss < best_loss
        if improved:
            best_loss, best_epoch = val_loss, epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        seconds = time.monotonic() - tic
        slowest = max(slowest, seconds)
        metrics = evaluate_scores(
            val.labels, val_scores, val.attack_types, args.threshold, val_loss
        )
        epoch_log.append(
            {
                "epoch": epoch,
                "train_loss": total / max(seen, 1),
                "val_loss": val_loss,
                "val_accuracy": metrics["accuracy"],
                "val_roc_auc": metrics["roc_auc"],
                "improved": improved,
                "seconds": round(seconds, 2),
            }
        )
        log.info(
            "epoch %d: train loss %.4f, val loss %.4f, val AUC %s (%.1fs)%s",
            epoch,
            epoch_log[-1]["train_loss"],
            val_loss,
            metrics["roc_auc"],
            seconds,
            " best" if improved else "",
        )
    timings["train_s"] = time.monotonic() - started - timings["load_s"]
    if best_state is None:
        raise RuntimeError("validation loss was never finite: training diverged (lower --lr?)")
    model.load_state_dict(best_state)

    eval_data, eval_split = (test, "test") if test.labels else (val, "val")
    eval_loss, eval_scores = predict(model, eval_data, device, plan, args.batch_size)
    evaluation = evaluate_scores(
        eval_data.labels, eval_scores, eval_data.attack_types, args.threshold, eval_loss
    )
    tic = time.monotonic()
    version = args.version or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    serving = bundle.meta.get("serving_crop") or {}
    crop_scale = float(serving.get("crop_scale", bundle.crop_scale))
    crop_shift = (
        float(serving.get("crop_shift", (0, 0))[0]),
        float(serving.get("crop_shift", (0, 0))[1]),
    )
    spec = host_spec(
        name="efficientnet-b2-liveness",
        version=version,
        input_size=bundle.input_size,
        crop_scale=crop_scale,
        crop_shift=crop_shift,
        threshold=args.threshold,
        training={
            "architecture": ARCHITECTURE,
            "trained_on": "gpu-host bundle",
            "device": str(device),
            "precision": plan.name,
            "epochs_run": len(epoch_log),
            "best_epoch": best_epoch,
            "augmentation": {"scale": SCALE_JITTER, "shift": SHIFT_JITTER, "hflip": 0.5},
            "bundle": {
                "n": len(bundle.labels),
                "size": bundle.size,
                **bundle.meta.get("counts", {}),
            },
            "imagenet_weights": args.imagenet_weights.name if args.imagenet_weights else None,
            "seed": args.seed,
            "box_calibration": serving.get("box_calibration"),
        },
        metrics={"evaluated_on": eval_split, **evaluation},
    )
    folder = args.out / "model"
    check_batch = eval_data.inputs[:8].numpy()
    ort_diff = export_model(model, folder, spec, check_batch)
    timings["export_s"] = time.monotonic() - tic

    tic = time.monotonic()
    images = [bundle.crops[i] for i in eval_data.index]
    boxes = [face_boxes(bundle)[i] for i in eval_data.index]
    if (crop_scale, crop_shift) != (bundle.crop_scale, (0.0, 0.0)):
        boxes = serving_boxes(boxes, crop_scale, crop_shift, bundle.crop_scale)
    stage = check_stage(model, folder, list(zip(images, boxes, strict=True)), args.check)
    # The stage cropped the faces the evaluation scored, from serving-like boxes: its input
    # must be the eval's input (to a pixel of rounding when the crop is calibrated).
    drift = np.abs(stage.pop("inputs") - eval_data.inputs.numpy()).mean(axis=(1, 2, 3))
    stage["max_input_diff_to_eval"] = float(drift.max()) if len(drift) else 0.0
    if not stage["max_input_diff_to_eval"] < MAX_INPUT_DRIFT:
        raise RuntimeError(
            f"the stage's crops differ from the evaluated ones by {drift.max():.3f} (normalised "
            "units, mean per face): the exported crop does not show the training crop"
        )
    timings["stage_check_s"] = time.monotonic() - tic
    timings["total_s"] = time.monotonic() - started

    report = {
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "precision": plan.name,
        "channels_last": plan.channels_last,
        "epochs_run": len(epoch_log),
        "best_epoch": best_epoch,
        "stopped_for_budget": stopped_for_budget,
        "evaluated_on": eval_split,
        "metrics": {k: evaluation[k] for k in ("accuracy", "roc_auc", "spoof_recall")},
        "acer": evaluation["iso_30107_3"]["acer"],
        "ort_vs_torch_max_softmax_diff": ort_diff,
        "stage_check": stage,
        "model_folder": str(folder),
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "epoch_log.json").write_text(json.dumps(epoch_log, indent=1) + "\n")
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = train(parse_args(argv))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
