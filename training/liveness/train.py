"""The liveness training run: data -> crops -> EfficientNet-B2 -> evaluation -> ONNX export.

Outputs under ``config.out_dir``::

    model/                      deployable: <onnx file> + liveness.json
    checkpoints/best.safetensors
    epoch_log.json              one entry per epoch (rewritten after each epoch)
    evaluation.json             metrics of the best checkpoint on val and test
    roc.png, score_histogram.png
    preprocess_report.json/.csv unusable images and why
    eda.json, eda.png           class / attack-type balance per split
    crop_cache/                 cached face crops (unless cache_dir is set)
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.liveness.calibration import (
    BoxCalibration,
    FacePackBoxDetector,
    calibrate,
    serving_crop,
)
from training.liveness.config import TrainConfig, TrainResult
from training.liveness.data import CLASS_NAMES, Sample, load_samples
from training.liveness.dataset import CropDataset
from training.liveness.evaluate import evaluate_scores
from training.liveness.export import build_spec, export_onnx
from training.liveness.model import (
    ARCHITECTURE,
    SPOOF_CLASS_INDEX,
    build_model,
    load_checkpoint,
    pick_device,
    save_checkpoint,
)
from training.liveness.preprocess import CropParams, CroppedSample, PreprocessResult, preprocess
from training.liveness.report import (
    balance_table,
    plot_roc,
    plot_score_histogram,
    write_eda_report,
    write_json,
    write_preprocess_report,
)

log = logging.getLogger(__name__)

EXPORT_CHECK_BATCH = 8


class EarlyStopping:
    """Stop when the validation loss has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ValueError("patience must be >= 1")
        self.patience = patience
        self.min_delta = min_delta
        self.best_loss = float("inf")
        self.best_epoch = 0
        self.bad_epochs = 0

    def step(self, epoch: int, val_loss: float) -> bool:
        """Record an epoch; True when it is the new best (the caller saves a checkpoint)."""
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


@dataclass(frozen=True)
class Predictions:
    loss: float
    labels: list[int]
    spoof_scores: list[float]
    attack_types: list[str]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.benchmark = False  # autotuning picks kernels nondeterministically


def _loader(
    items: Sequence[CroppedSample], config: TrainConfig, device: torch.device, *, train: bool
) -> DataLoader[tuple[torch.Tensor, int]]:
    dataset = CropDataset(items)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=train,
        # A last batch of one or two images gives a noisy step; drop it when there is more.
        drop_last=train and len(dataset) > config.batch_size,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed) if train else None,
    )


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, int]],
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    device: torch.device,
    max_steps: int | None,
    desc: str,
) -> tuple[float, int]:
    """(mean training loss, steps taken). Horizontal flips are the only augmentation:
    colour or blur jitter would erase the print/screen artefacts the model must learn."""
    model.train()
    total, seen, steps = 0.0, 0, 0
    n_batches = len(loader) if max_steps is None else min(len(loader), max_steps)
    bar = tqdm(loader, total=n_batches, desc=desc, unit="batch", leave=False)
    for images, labels in bar:
        if max_steps is not None and steps >= max_steps:
            break
        images, labels = images.to(device, non_blocking=True), labels.to(device)
        flip = torch.rand(images.shape[0], device=device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        total += float(loss.item()) * images.shape[0]
        seen += images.shape[0]
        steps += 1
        bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    return (total / seen if seen else float("nan")), steps


@torch.no_grad()
def predict(
    model: nn.Module,
    items: Sequence[CroppedSample],
    config: TrainConfig,
    device: torch.device,
    criterion: nn.Module,
) -> Predictions:
    """Mean loss and spoof scores (softmax of the spoof class) for ``items``."""
    model.eval()
    total, scores, labels = 0.0, [], []
    for images, batch_labels in _loader(items, config, device, train=False):
        logits = model(images.to(device))
        targets = batch_labels.to(device)
        total += float(criterion(logits, targets).item()) * images.shape[0]
        probs = torch.softmax(logits.float(), dim=1)[:, SPOOF_CLASS_INDEX]
        scores.extend(probs.cpu().tolist())
        labels.extend(batch_labels.tolist())
    return Predictions(
        loss=total / len(items) if items else float("nan"),
        labels=labels,
        spoof_scores=scores,
        attack_types=[i.sample.attack_type for i in items],
    )


def _metrics(pred: Predictions, threshold: float) -> dict[str, Any]:
    return evaluate_scores(pred.labels, pred.spoof_scores, pred.attack_types, threshold, pred.loss)


def _split_items(result: PreprocessResult, split: str) -> list[CroppedSample]:
    return [c for c in result.usable if c.sample.split == split]


def _check_batch(items: Sequence[CroppedSample]) -> npt.NDArray[np.float32]:
    dataset = CropDataset(items[:EXPORT_CHECK_BATCH])
    return torch.stack([dataset[i][0] for i in range(len(dataset))]).numpy()


def _describe_data(samples: Sequence[Sample], result: PreprocessResult) -> dict[str, Any]:
    return {
        "n_images": len(samples),
        "n_usable": len(result.usable),
        "n_unusable": len(result.unusable),
        "unusable_by_reason": dict(Counter(u.reason for u in result.unusable)),
        "per_split": balance_table([c.sample for c in result.usable]),
        "attack_types": sorted({c.sample.attack_type for c in result.usable} - {"live"}),
    }


def _calibrate_boxes(
    config: TrainConfig, prep: PreprocessResult, serving: FacePackBoxDetector | None
) -> BoxCalibration | None:
    if serving is None:
        return None
    calibration = calibrate(
        prep.box_matches,
        n_unmatched=prep.box_unmatched,
        train_crop_scale=config.crop_scale,
        serving_detector=serving.version,
        train_detector=f"mediapipe-blazeface-{config.detector}",
        serving_det_size=serving.det_size,
    )
    if calibration is not None:
        log.info(
            "box calibration on %d faces (%d unmatched, cache %d hits / %d misses): serving "
            "box %.3fx the training box (p10 %.3f, p90 %.3f); serving crop_scale %.4f, shift "
            "(%+.4f, %+.4f); median crop IoU %.3f (uncalibrated %.3f)",
            calibration.n_faces,
            calibration.n_unmatched,
            prep.box_cache_hits,
            prep.box_cache_misses,
            calibration.median_ratio,
            calibration.p10_ratio,
            calibration.p90_ratio,
            calibration.serving_crop_scale,
            *calibration.serving_crop_shift,
            calibration.median_crop_iou,
            calibration.median_crop_iou_uncalibrated,
        )
    return calibration


def train_liveness(config: TrainConfig) -> TrainResult:
    """Run the whole job; raises ``ValueError`` when the data cannot support a run."""
    started = time.monotonic()
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    device = pick_device(config.device)
    version = config.version or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    samples = load_samples(
        config.data_dir, config.manifest, config.val_fraction, config.test_fraction
    )
    params = CropParams(
        config.crop_scale, config.input_size, config.detector, config.min_detection_confidence
    )
    # Loaded before any work: a broken serving pack should fail the run at once, not at export.
    serving = (
        FacePackBoxDetector.load(config.serving_face_pack)
        if config.serving_face_pack is not None
        else None
    )
    prep = preprocess(samples, params, config.resolved_cache_dir, serving=serving)
    calibration = _calibrate_boxes(config, prep, serving)
    export_crop_scale, export_crop_shift = serving_crop(config.crop_scale, calibration)
    prep_report = write_preprocess_report(
        prep, out / "preprocess_report.json", out / "preprocess_report.csv"
    )
    eda_report = write_eda_report(
        [c.sample for c in prep.usable],
        [u.sample for u in prep.unusable],
        out / "eda.json",
        out / "eda.png",
    )
    log.info(
        "%d images: %d usable, %d unusable (see %s); crop cache %d hits / %d misses",
        len(samples),
        len(prep.usable),
        len(prep.unusable),
        prep_report,
        prep.cache_hits,
        prep.cache_misses,
    )
    train_items, val_items = _split_items(prep, "train"), _split_items(prep, "val")
    test_items = _split_items(prep, "test")
    if not train_items or not val_items:
        raise ValueError(
            f"need usable images in train and val (got {len(train_items)} / {len(val_items)}); "
            "add data or raise val_fraction"
        )
    if {c.sample.label for c in train_items} != {0, 1}:
        raise ValueError("the training split must hold both live and spoof images")

    model = build_model(config.dropout, config.imagenet_weights).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    stopper = EarlyStopping(config.patience, config.min_delta)
    checkpoint = out / "checkpoints" / "best.safetensors"
    epoch_log_path = out / "epoch_log.json"
    epoch_log: list[dict[str, Any]] = []
    train_loader = _loader(train_items, config, device, train=True)

    epoch = 0
    for epoch in range(1, config.epochs + 1):
        tic = time.monotonic()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, steps = train_one_epoch(
            model,
            train_loader,
            optimizer,
            criterion,
            device,
            config.max_steps_per_epoch,
            f"epoch {epoch}/{config.epochs}",
        )
        scheduler.step()
        val = _metrics(predict(model, val_items, config, device, criterion), config.threshold)
        improved = stopper.step(epoch, val["loss"])
        if improved:
            save_checkpoint(model, checkpoint)
        epoch_log.append(
            {
                "epoch": epoch,
                "lr": lr,
                "steps": steps,
                "train_loss": train_loss,
                "val_loss": val["loss"],
                "val_accuracy": val["accuracy"],
                "val_spoof_recall": val["spoof_recall"],
                "val_spoof_precision": val["spoof_precision"],
                "val_f1": val["f1"],
                "val_roc_auc": val["roc_auc"],
                "val_acer": val["iso_30107_3"]["acer"],
                "improved": improved,
                "best_epoch": stopper.best_epoch,
                "seconds": round(time.monotonic() - tic, 2),
            }
        )
        write_json(epoch_log_path, epoch_log)
        log.info(
            "epoch %d: train loss %.4f, val loss %.4f, spoof recall %s%s",
            epoch,
            train_loss,
            val["loss"],
            val["spoof_recall"],
            " (best)" if improved else "",
        )
        if stopper.should_stop:
            log.info("early stop: no val-loss improvement for %d epochs", config.patience)
            break

    if stopper.best_epoch == 0:
        raise RuntimeError("validation loss was never finite: training diverged (lower lr?)")
    load_checkpoint(model, checkpoint)
    eval_items, eval_split = (test_items, "test") if test_items else (val_items, "val")
    val_pred = predict(model, val_items, config, device, criterion)
    eval_pred = (
        predict(model, eval_items, config, device, criterion) if eval_split == "test" else val_pred
    )
    eval_metrics = _metrics(eval_pred, config.threshold)
    evaluation = {
        "evaluated_on": eval_split,
        "best_epoch": stopper.best_epoch,
        "threshold": config.threshold,
        "test": eval_metrics if eval_split == "test" else None,
        "val": _metrics(val_pred, config.threshold),
    }
    evaluation_path = write_json(out / "evaluation.json", evaluation)
    plot_roc(eval_pred.labels, eval_pred.spoof_scores, eval_metrics["roc_auc"], out / "roc.png")
    plot_score_histogram(
        eval_pred.spoof_scores,
        eval_pred.attack_types,
        config.threshold,
        out / "score_histogram.png",
    )

    data_summary = _describe_data(samples, prep)
    training_summary = {
        "architecture": ARCHITECTURE,
        "classes": list(CLASS_NAMES),
        "input_size": config.input_size,
        "crop_scale": config.crop_scale,
        "face_detector": f"mediapipe blazeface ({config.detector})",
        "box_calibration": calibration.to_dict() if calibration is not None else None,
        "imagenet_weights": config.imagenet_weights.name if config.imagenet_weights else None,
        "optimizer": {"name": "adam", "lr": config.lr, "weight_decay": config.weight_decay},
        "scheduler": "cosine",
        "dropout": config.dropout,
        "epochs_run": epoch,
        "best_epoch": stopper.best_epoch,
        "seed": config.seed,
        "data": data_summary,
    }
    spec = build_spec(
        name=config.model_name,
        version=version,
        onnx_file=config.onnx_file,
        input_size=config.input_size,
        crop_scale=export_crop_scale,
        crop_shift=export_crop_shift,
        threshold=config.threshold,
        training=training_summary,
        metrics={"evaluated_on": eval_split, **eval_metrics},
    )
    exported = export_onnx(model, out / "model", spec, _check_batch(eval_items))
    log.info(
        "exported %s (ORT vs torch max softmax diff %.2e) in %.1fs",
        exported.onnx_path,
        exported.max_softmax_diff,
        time.monotonic() - started,
    )
    return TrainResult(
        out_dir=out,
        onnx_path=exported.onnx_path,
        spec_path=exported.spec_path,
        checkpoint_path=checkpoint,
        epoch_log_path=epoch_log_path,
        evaluation_path=evaluation_path,
        preprocess_report_path=prep_report,
        eda_report_path=eda_report,
        best_epoch=stopper.best_epoch,
        epochs_run=epoch,
        stopped_early=stopper.should_stop,
        device=str(device),
        metrics={
            "evaluated_on": eval_split,
            "max_softmax_diff": exported.max_softmax_diff,
            **{k: eval_metrics[k] for k in ("accuracy", "spoof_recall", "spoof_precision", "f1")},
            "roc_auc": eval_metrics["roc_auc"],
            "acer": eval_metrics["iso_30107_3"]["acer"],
        },
        counts=data_summary,
    )
