"""The resumable state of a training run: one file, written atomically after every epoch.

``<out>/checkpoints/last.pt`` holds the model (last and best epoch), optimizer, scheduler
and gradient-scaler state, the epoch reached, the early-stopping state and the epoch log,
plus a fingerprint of the settings that shape training. It is read with
``torch.load(weights_only=True)``, which unpickles only tensors and plain containers, so a
tampered file cannot run code (the deployable best weights stay in safetensors). Resuming
under other settings is refused: the cosine schedule and the early-stopping history would
no longer describe the run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

STATE_FORMAT = "faceauth-liveness-train-state/1"
STATE_FILENAME = "last.pt"


@dataclass(frozen=True)
class RunState:
    epoch: int  # last completed epoch
    model: dict[str, Any]
    # The best epoch's weights: best.safetensors is rewritten from them on resume, so a crash
    # between writing it and writing this file cannot leave the two disagreeing.
    best_model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    stopper: dict[str, Any]
    epoch_log: list[dict[str, Any]]


def fingerprint(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def save_state(path: Path, state: RunState, settings_fingerprint: str) -> None:
    """Write ``state`` to ``path`` via a temporary file and a rename (never a torn file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": STATE_FORMAT,
        "fingerprint": settings_fingerprint,
        "epoch": state.epoch,
        "model": {k: v.detach().cpu() for k, v in state.model.items()},
        "best_model": {k: v.detach().cpu() for k, v in state.best_model.items()},
        "optimizer": state.optimizer,
        "scheduler": state.scheduler,
        "scaler": state.scaler,
        "stopper": state.stopper,
        "epoch_log": state.epoch_log,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_state(path: Path, settings_fingerprint: str) -> RunState:
    """Read a state written by ``save_state``; ``ValueError`` when it belongs to another run."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a faceauth liveness training state")
    if payload.get("fingerprint") != settings_fingerprint:
        raise ValueError(
            f"{path} was written under other training settings; resume with the same "
            f"settings or use a new --out folder (saved: {payload.get('fingerprint')})"
        )
    return RunState(
        epoch=int(payload["epoch"]),
        model=payload["model"],
        best_model=payload["best_model"],
        optimizer=payload["optimizer"],
        scheduler=payload["scheduler"],
        scaler=payload["scaler"],
        stopper=payload["stopper"],
        epoch_log=list(payload["epoch_log"]),
    )
