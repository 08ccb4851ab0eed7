"""How a run uses its device: mixed precision, channels-last and data-loader settings.

Pure torch, no project imports beyond the config's literals, so the GPU-host script
(``training/gpu``) uses exactly the same choices as ``faceauth train liveness``. Every
accelerated path is chosen only for a CUDA device; on the CPU the run is plain fp32, which
is what CI exercises.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from training.liveness.config import Precision

log = logging.getLogger(__name__)

# More loader workers than this rarely helps a single GPU on ~260 px crops and costs memory.
MAX_AUTO_WORKERS = 8


@dataclass(frozen=True)
class AmpPlan:
    """Autocast dtype (None: fp32, autocast off), gradient scaling and memory format."""

    device_type: str
    dtype: torch.dtype | None
    use_scaler: bool  # fp16 only: bf16 has fp32's exponent range and needs no loss scaling
    channels_last: bool  # NHWC convolutions are the fast path of cuDNN under autocast

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def name(self) -> str:
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(
            self.dtype, str(self.dtype)
        )


def _cuda_bf16_supported() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def plan_amp(
    device: torch.device,
    precision: Precision,
    *,
    bf16_supported: Callable[[], bool] = _cuda_bf16_supported,
) -> AmpPlan:
    """The precision plan for ``device``; anything but CUDA runs fp32 (requested or not)."""
    if device.type != "cuda":
        if precision not in ("auto", "fp32"):
            log.warning(
                "precision %s ignored on %s: mixed precision is CUDA-only", precision, device
            )
        return AmpPlan(device.type, None, use_scaler=False, channels_last=False)
    if precision == "fp32":
        return AmpPlan("cuda", None, use_scaler=False, channels_last=True)
    if precision == "bf16" or (precision == "auto" and bf16_supported()):
        return AmpPlan("cuda", torch.bfloat16, use_scaler=False, channels_last=True)
    return AmpPlan("cuda", torch.float16, use_scaler=True, channels_last=True)


def autocast(plan: AmpPlan) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for the plan, or a no-op context when it runs fp32."""
    if plan.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=plan.device_type, dtype=plan.dtype)


def make_scaler(plan: AmpPlan) -> torch.amp.GradScaler:
    """A gradient scaler that is a pass-through unless the plan is fp16 on CUDA."""
    return torch.amp.GradScaler("cuda", enabled=plan.use_scaler)


def to_device(images: torch.Tensor, device: torch.device, plan: AmpPlan) -> torch.Tensor:
    """Move a batch (non-blocking from pinned memory) in the plan's memory format."""
    if plan.channels_last:
        return images.to(device, non_blocking=True, memory_format=torch.channels_last)
    return images.to(device, non_blocking=True)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffling, augmentation and dropout.

    Seeding every epoch from (seed, epoch), instead of letting one random stream run on,
    makes a resumed run draw exactly what an uninterrupted one would, with no RNG state in
    the checkpoint.
    """
    return seed * 100_003 + epoch


def resolve_num_workers(requested: int | None, device: torch.device) -> int:
    """Data-loading worker processes: as asked, else several on CUDA and none on the CPU.

    On the CPU the model and the loader compete for the same cores, so extra processes only
    add start-up cost; on CUDA the decode/normalise work must keep up with the GPU.
    """
    if requested is not None:
        return requested
    if device.type != "cuda":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_AUTO_WORKERS, (cpus or 2) - 1))


def loader_options(device: torch.device, num_workers: int) -> dict[str, Any]:
    """DataLoader keyword arguments for ``num_workers`` processes feeding ``device``."""
    options: dict[str, Any] = {
        "num_workers": num_workers,
        "pin_memory": device.type == "cuda",
    }
    if num_workers > 0:
        # Keep workers across epochs (no re-fork per epoch) and a few batches in flight.
        options["persistent_workers"] = True
        options["prefetch_factor"] = 4
        # Workers forked from a clean server process, not from this one: the job has run
        # MediaPipe, OpenCV and ONNX Runtime thread pools by now, and a plain fork copies
        # whichever of their locks another thread held (the child then waits forever; a
        # 36-thread test process reproduced it). The dataset pickles cheaply (paths).
        options["multiprocessing_context"] = "forkserver"
    return options
