"""The EfficientNet-B2 classifier, its input normalisation and checkpoint I/O (safetensors only).

Weights are never downloaded: timm is asked for ``pretrained=False`` and ImageNet weights
come from a local safetensors file when one is given. Checkpoints are safetensors, never
pickle, so loading one cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

ARCHITECTURE = "efficientnet_b2"
NUM_CLASSES = 2  # [live, spoof]
LIVE_CLASS_INDEX = 0
SPOOF_CLASS_INDEX = 1
COLOR_ORDER: Literal["RGB"] = "RGB"
PIXEL_SCALE = 1.0 / 255.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HEAD_PREFIX = "classifier."  # timm's EfficientNet head; ImageNet's 1000-way head is dropped


def build_model(dropout: float = 0.3, imagenet_weights: Path | None = None) -> nn.Module:
    """EfficientNet-B2 with dropout before a fresh 2-class head [live, spoof]."""
    # Belt and braces: even a timm code path that tried the hub would fail fast offline.
    os.environ["HF_HUB_OFFLINE"] = "1"
    import timm  # local: timm import is slow and pulls torchvision

    model: nn.Module = timm.create_model(
        ARCHITECTURE, pretrained=False, num_classes=NUM_CLASSES, drop_rate=dropout
    )
    if imagenet_weights is not None:
        load_backbone_weights(model, imagenet_weights)
    return model


def load_backbone_weights(model: nn.Module, path: Path) -> None:
    """Load ImageNet weights from a local safetensors file, skipping the classifier head.

    Raises ``ValueError`` when anything but the head is missing or mis-shaped, because a
    silently half-loaded backbone trains into a much worse model without any error.
    """
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path}: ImageNet weights must be a .safetensors file (pickled .pth files are not "
            "loaded; convert with safetensors.torch.save_file(torch.load(p), 'model.safetensors'))"
        )
    from safetensors.torch import load_file

    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith(_HEAD_PREFIX)}
    own = model.state_dict()
    bad_shape = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad_shape:
        raise ValueError(f"{path}: shape mismatch for {bad_shape[:5]} (not {ARCHITECTURE}?)")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(_HEAD_PREFIX)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path}: not {ARCHITECTURE} weights (missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]})"
        )


def save_checkpoint(model: nn.Module, path: Path) -> None:
    save_weights(model.state_dict(), path)


def save_weights(weights: dict[str, torch.Tensor], path: Path) -> None:
    """Write a state dict as safetensors, atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata={"architecture": ARCHITECTURE})
    tmp.replace(path)


def load_checkpoint(model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)), strict=True)


def normalise_bgr_batch(crops_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """(N, H, W, 3) BGR uint8 crops -> (N, 3, H, W) float32, exactly as ``liveness.json`` says.

    This is the numpy twin of what the workers do from the exported spec, so the export
    check compares ONNX Runtime and torch on the very tensors serving will feed.
    """
    rgb = crops_bgr[..., ::-1].astype(np.float32) * np.float32(PIXEL_SCALE)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return np.ascontiguousarray(((rgb - mean) / std).transpose(0, 3, 1, 2), dtype=np.float32)


def pick_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
