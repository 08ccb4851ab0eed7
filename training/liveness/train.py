"""The liveness training run: data -> crops -> EfficientNet-B2 -> evaluation -> ONNX export.

Outputs under ``config.out_dir``::

    model/                      deployable: <onnx file> + liveness.json
    checkpoints/best.safetensors
    checkpoints/last.pt         resumable state after the last epoch (``--resume``)
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Sampler
from tqdm import tqdm

from training.liveness.accel import (
    AmpPlan,
    autocast,
    epoch_seed,
    loader_options,
    make_scaler,
    plan_amp,
    resolve_num_workers,
    to_device,
)
from training.liveness.balance import balanced_sampler, class_counts, class_loss_weights
from training.liveness.calibration import (
    BoxCalibration,
    FacePackBoxDetector,
    calibrate,
    serving_crop,
)
from training.liveness.config import TrainConfig, TrainResult
from training.liveness.data import CLASS_NAMES, Sample, load_samples
from training.liveness.dataset import CropDataset, init_loader_worker
from training.liveness.evaluate import evaluate_scores
from training.liveness.export import build_spec, export_onnx
from training.liveness.model import (
    ARCHITECTURE,
    SPOOF_CLASS_INDEX,
    build_model,
    load_checkpoint,
    pick_device,
    save_weights,
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
from training.liveness.resume import (
    STATE_FILENAME,
    RunState,
    fingerprint,
    load_state,
    save_state,
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

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss = float(state["best_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])


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
    items: Sequence[CroppedSample],
    config: TrainConfig,
    device: torch.device,
    *,
    train: bool,
    generator: torch.Generator | None = None,
) -> DataLoader[tuple[torch.Tensor, int]]:
    dataset = CropDataset(items)
    options = loader_options(device, resolve_num_workers(config.num_workers, device))
    if options["num_workers"] > 0:
        options["worker_init_fn"] = init_loader_worker
    sampler: Sampler[int] | None = None
    if train:
        # The sampler owns ``generator`` (reseeded every epoch). The loader draws worker base
        # seeds from its own generator, and only when it (re)creates worker processes, which
        # persistent workers do once per run, not per epoch: letting those draws touch the
        # sampler's or the global stream would make a resumed run shuffle differently.
        order = generator or torch.Generator()
        sampler = (
            balanced_sampler(dataset.labels(), order)
            if config.balance == "sampler"
            else RandomSampler(dataset, generator=order)
        )
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        # A last batch of one or two images gives a noisy step; drop it when there is more.
        drop_last=train and len(dataset) > config.batch_size,
        generator=torch.Generator().manual_seed(config.seed),
        **options,
    )


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, int]],
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    device: torch.device,
    max_steps: int | None,
    desc: str,
    plan: AmpPlan | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[float, int]:
    """(mean training loss, steps taken). Horizontal flips are the only augmentation:
    colour or blur jitter would erase the print/screen artefacts the model must learn."""
    plan = plan or plan_amp(device, "fp32")
    scaler = scaler or make_scaler(plan)
    model.train()
    total, seen, steps = 0.0, 0, 0
    n_batches = len(loader) if max_steps is None else min(len(loader), max_steps)
    bar = tqdm(loader, total=n_batches, desc=desc, unit="batch", leave=False)
    for images, labels in bar:
        if max_steps is not None and steps >= max_steps:
            break
        images, labels = to_device(images, device, plan), labels.to(device, non_blocking=True)
        flip = torch.rand(images.shape[0], device=device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        optimizer.zero_grad(set_to_none=True)
        with autocast(plan):
            loss = criterion(model(images), labels)
        # A disabled scaler (fp32, bf16) passes the loss and the step straight through.
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
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
    plan: AmpPlan | None = None,
    loader: DataLoader[tuple[torch.Tensor, int]] | None = None,
) -> Predictions:
    """Mean loss and spoof scores (softmax of the spoof class) for ``items``."""
    plan = plan or plan_amp(device, "fp32")
    model.eval()
    total, scores, labels = 0.0, [], []
    for images, batch_labels in loader or _loader(items, config, device, train=False):
        with autocast(plan):
            logits = model(to_device(images, device, plan)).float()
        targets = batch_labels.to(device)
        total += float(criterion(logits, targets).item()) * images.shape[0]
        probs = torch.softmax(logits, dim=1)[:, SPOOF_CLASS_INDEX]
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


@dataclass
class FitResult:
    model: nn.Module  # holding the best epoch's weights
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    resumed_from: int  # last epoch of the state resumed from; 0: a fresh start
    epoch_log: list[dict[str, Any]]
    checkpoint: Path
    state_path: Path
    plan: AmpPlan


def _fingerprint(config: TrainConfig, n_train: int, n_val: int) -> str:
    """What a resumed run must share with the interrupted one (not paths, workers, device)."""
    keys = (
        "epochs",
        "batch_size",
        "input_size",
        "crop_scale",
        "patience",
        "min_delta",
        "max_steps_per_epoch",
        "seed",
        "lr",
        "weight_decay",
        "dropout",
        "balance",
        "precision",
    )
    settings = {k: v for k, v in asdict(config).items() if k in keys}
    return fingerprint({**settings, "architecture": ARCHITECTURE, "n": [n_train, n_val]})


def fit(
    config: TrainConfig,
    train_items: Sequence[CroppedSample],
    val_items: Sequence[CroppedSample],
    device: torch.device,
    *,
    on_epoch_end: Callable[[int], None] | None = None,
) -> FitResult:
    """Train with early stopping on the validation loss; resumable after every epoch.

    After each epoch the full state goes to ``checkpoints/last.pt`` (atomically) and an
    improved model to ``checkpoints/best.safetensors``. With ``config.resume`` an existing
    ``last.pt`` is continued; the per-epoch seeding makes the result equal to a run that
    was never interrupted. ``on_epoch_end`` is called after the state is saved.
    """
    plan = plan_amp(device, config.precision)
    torch.manual_seed(config.seed)  # the initial weights: a resumed run overwrites them anyway
    # cuDNN autotuning: fastest kernels for the fixed input size; bit-exact repeatability is
    # a CPU property here (CUDA kernels are not deterministic anyway under AMP).
    torch.backends.cudnn.benchmark = device.type == "cuda"
    model = build_model(config.dropout, config.imagenet_weights).to(device)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_labels = [c.sample.label for c in train_items]
    live, spoof = class_counts(train_labels)
    weight = class_loss_weights(train_labels).to(device) if config.balance == "loss" else None
    criterion = nn.CrossEntropyLoss(weight=weight)
    val_criterion = nn.CrossEntropyLoss()  # unweighted: the stopping signal stays comparable
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    scaler = make_scaler(plan)
    stopper = EarlyStopping(config.patience, config.min_delta)
    out = config.out_dir
    checkpoint = out / "checkpoints" / "best.safetensors"
    state_path = out / "checkpoints" / STATE_FILENAME
    epoch_log_path = out / "epoch_log.json"
    epoch_log: list[dict[str, Any]] = []
    settings = _fingerprint(config, len(train_items), len(val_items))

    start = 0
    best_weights: dict[str, torch.Tensor] = {}
    if config.resume and state_path.is_file():
        state = load_state(state_path, settings)
        model.load_state_dict(state.model)
        best_weights = state.best_model
        save_weights(best_weights, checkpoint)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        scaler.load_state_dict(state.scaler)
        stopper.load_state_dict(state.stopper)
        epoch_log, start = state.epoch_log, state.epoch
        log.info("resuming after epoch %d of %d from %s", start, config.epochs, state_path)
    elif config.resume:
        log.info("no %s yet: starting afresh", state_path)
    log.info(
        "training on %s (%s%s), %d train (%d live / %d spoof), %d val, balance %s",
        device,
        plan.name,
        ", channels_last" if plan.channels_last else "",
        len(train_items),
        live,
        spoof,
        len(val_items),
        config.balance,
    )

    generator = torch.Generator()
    train_loader = _loader(train_items, config, device, train=True, generator=generator)
    val_loader = _loader(val_items, config, device, train=False)
    epoch = start
    # A resumed run that had already stopped early (or finished) trains no further.
    last = start if stopper.should_stop else config.epochs
    for epoch in range(start + 1, last + 1):
        tic = time.monotonic()
        seed = epoch_seed(config.seed, epoch)
        generator.manual_seed(seed)
        torch.manual_seed(seed)
        lr = optimizer.param_groups[0]["lr"]
        train_loss, steps = train_one_epoch(
            model,
            train_loader,
            optimizer,
            criterion,
            device,
            config.max_steps_per_epoch,
            f"epoch {epoch}/{config.epochs}",
            plan,
            scaler,
        )
        scheduler.step()
        pred = predict(model, val_items, config, device, val_criterion, plan, val_loader)
        val = _metrics(pred, config.threshold)
        improved = stopper.step(epoch, val["loss"])
        if improved:
            best_weights = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
            save_weights(best_weights, checkpoint)
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
        save_state(
            state_path,
            RunState(
                epoch=epoch,
                model=model.state_dict(),
                best_model=best_weights,
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict(),
                stopper=stopper.state_dict(),
                epoch_log=epoch_log,
            ),
            settings,
        )
        log.info(
            "epoch %d: train loss %.4f, val loss %.4f, spoof recall %s%s",
            epoch,
            train_loss,
            val["loss"],
            val["spoof_recall"],
            " (best)" if improved else "",
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch)
        if stopper.should_stop:
            log.info("early stop: no val-loss improvement for %d epochs", config.patience)
            break

    if stopper.best_epoch == 0:
        raise RuntimeError("validation loss was never finite: training diverged (lower lr?)")
    load_checkpoint(model, checkpoint)
    return FitResult(
        model=model,
        best_epoch=stopper.best_epoch,
        epochs_run=epoch,
        stopped_early=stopper.should_stop,
        resumed_from=start,
        epoch_log=epoch_log,
        checkpoint=checkpoint,
        state_path=state_path,
        plan=plan,
    )


def train_liveness(config: TrainConfig) -> TrainResult:
    """Run the whole job; raises ``ValueError`` when the data cannot support a run."""
    started = time.monotonic()
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    device = pick_device(config.device)
    version = config.version or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    samples = load_samples(
        config.data_dir,
        config.manifest,
        config.val_fraction,
        config.test_fraction,
        config.celeba_spoof,
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

    fitted = fit(config, train_items, val_items, device)
    model, stopper_best = fitted.model, fitted.best_epoch
    criterion = nn.CrossEntropyLoss()
    plan = fitted.plan
    eval_items, eval_split = (test_items, "test") if test_items else (val_items, "val")
    val_pred = predict(model, val_items, config, device, criterion, plan)
    eval_pred = (
        predict(model, eval_items, config, device, criterion, plan)
        if eval_split == "test"
        else val_pred
    )
    eval_metrics = _metrics(eval_pred, config.threshold)
    evaluation = {
        "evaluated_on": eval_split,
        "best_epoch": stopper_best,
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
        "epochs_run": fitted.epochs_run,
        "best_epoch": stopper_best,
        "seed": config.seed,
        "precision": plan.name,
        "balance": config.balance,
        "resumed_from_epoch": fitted.resumed_from,
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
        checkpoint_path=fitted.checkpoint,
        epoch_log_path=out / "epoch_log.json",
        evaluation_path=evaluation_path,
        preprocess_report_path=prep_report,
        eda_report_path=eda_report,
        best_epoch=stopper_best,
        epochs_run=fitted.epochs_run,
        stopped_early=fitted.stopped_early,
        device=str(device),
        metrics={
            "evaluated_on": eval_split,
            "max_softmax_diff": exported.max_softmax_diff,
            **{k: eval_metrics[k] for k in ("accuracy", "spoof_recall", "spoof_precision", "f1")},
            "roc_auc": eval_metrics["roc_auc"],
            "acer": eval_metrics["iso_30107_3"]["acer"],
        },
        counts=data_summary,
        resumed_from=fitted.resumed_from,
        precision=plan.name,
    )
