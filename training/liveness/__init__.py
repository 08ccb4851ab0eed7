"""Liveness (presentation-attack detection) training: EfficientNet-B2 on face context crops.

Entry point: :func:`training.liveness.train.train_liveness`. Submodules import torch, timm
and mediapipe lazily where they can, so importing the config alone stays cheap.
"""

from training.liveness.config import TrainConfig, TrainResult

__all__ = ["TrainConfig", "TrainResult"]
