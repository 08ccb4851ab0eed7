"""Settings of one liveness training run and the summary it returns (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# MediaPipe ships two BlazeFace models: "short" (faces within about 2 m, the usual selfie or
# PAD capture) and "full" (full-range, small faces). "auto" tries short first and falls back
# to full so that a far-away face is cropped rather than reported unusable.
DetectorChoice = Literal["short", "full", "auto"]
# Numeric precision of the forward/backward pass. "auto": bf16 on a CUDA device that supports
# it, else fp16 with a gradient scaler; always fp32 on the CPU (autocast is CUDA-only here).
Precision = Literal["auto", "fp32", "fp16", "bf16"]
# Class balancing: none; "sampler" draws live and spoof equally often (WeightedRandomSampler);
# "loss" weights the cross-entropy by inverse class frequency.
Balance = Literal["none", "sampler", "loss"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; two runs with equal configs and data give equal splits."""

    out_dir: Path
    data_dir: Path | None = None  # folder layout live/ + spoof/[attack]/
    manifest: Path | None = None  # CSV path,label[,attack_type][,subject_id][,split]
    # CelebA-Spoof label files (metas/*/*_label.json or .txt); win over manifest and data_dir,
    # which is then the dataset root (default: the folder above metas/).
    celeba_spoof: tuple[Path, ...] = ()
    epochs: int = 30
    batch_size: int = 32
    input_size: int = 260  # EfficientNet-B2's native resolution
    crop_scale: float = 1.6  # context around the face raised spoof recall ~87% -> ~97%
    patience: int = 5
    min_delta: float = 0.0  # smallest val-loss drop that counts as an improvement
    max_steps_per_epoch: int | None = None
    imagenet_weights: Path | None = None  # local .safetensors; never downloaded
    seed: int = 42
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.3
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    threshold: float = 0.5  # spoof score at or above which a face is called an attack
    detector: DetectorChoice = "auto"
    min_detection_confidence: float = 0.5
    # The workers' InsightFace pack: its SCRFD boxes are measured against MediaPipe's so the
    # exported crop shows serving the pixels training saw. None: no calibration (a warning).
    serving_face_pack: Path | None = None
    cache_dir: Path | None = None  # default: <out_dir>/crop_cache
    device: str | None = None  # default: cuda when available, else cpu
    num_workers: int | None = None  # DataLoader workers; None: several on CUDA, 0 on CPU
    precision: Precision = "auto"
    balance: Balance = "none"
    # Continue from <out_dir>/checkpoints/last.pt when it exists (model, optimizer,
    # scheduler, scaler, epoch, early-stopping state); a missing one starts afresh.
    resume: bool = False
    model_name: str = "efficientnet-b2-liveness"
    version: str | None = None  # default: a UTC timestamp run id
    onnx_file: str = "liveness_efficientnet_b2.onnx"

    def __post_init__(self) -> None:
        if self.data_dir is None and self.manifest is None and not self.celeba_spoof:
            raise ValueError("give a data folder or a CSV manifest (or CelebA-Spoof label files)")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError("num_workers must be >= 0")
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError("precision must be auto, fp32, fp16 or bf16")
        if self.balance not in ("none", "sampler", "loss"):
            raise ValueError("balance must be none, sampler or loss")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")
        if self.input_size < 32:
            raise ValueError("input_size must be >= 32")
        if self.crop_scale < 1.0:
            raise ValueError("crop_scale must be >= 1.0")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError("max_steps_per_epoch must be >= 1")
        if not (0.0 < self.val_fraction < 1.0 and 0.0 <= self.test_fraction < 1.0):
            raise ValueError("val_fraction must be in (0, 1) and test_fraction in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave room for training")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be in [0, 1]")
        if self.serving_face_pack is not None and not self.serving_face_pack.is_dir():
            raise ValueError(f"serving face pack {self.serving_face_pack} is not a folder")

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.out_dir / "crop_cache"


@dataclass(frozen=True)
class TrainResult:
    """Where a run left its artefacts and the headline numbers."""

    out_dir: Path
    onnx_path: Path
    spec_path: Path
    checkpoint_path: Path
    epoch_log_path: Path
    evaluation_path: Path
    preprocess_report_path: Path
    eda_report_path: Path
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    device: str
    metrics: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    resumed_from: int = 0  # epoch of the state resumed from; 0: trained from scratch
    precision: str = "fp32"  # what the run actually used (fp32 on the CPU whatever was asked)
