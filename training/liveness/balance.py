"""Class balancing for liveness training: loss weights or a balanced sampler (torch only).

PAD datasets are rarely balanced (CelebA-Spoof holds three spoof images per live one), and
a model that sees mostly attacks learns to call everything an attack. Either the loss
weights each class by its inverse frequency, or the sampler draws both classes equally
often. Kept free of project imports so the GPU-host script shares it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch.utils.data import WeightedRandomSampler


def class_counts(labels: Sequence[int]) -> tuple[int, int]:
    """(live, spoof) counts of 0/1 labels."""
    counts = Counter(int(label) for label in labels)
    return counts.get(0, 0), counts.get(1, 0)


def class_loss_weights(labels: Sequence[int]) -> torch.Tensor:
    """Inverse-frequency weights [live, spoof], scaled so a balanced set weighs 1 each."""
    live, spoof = class_counts(labels)
    if not live or not spoof:
        raise ValueError("class balancing needs live and spoof training images")
    total = live + spoof
    return torch.tensor([total / (2.0 * live), total / (2.0 * spoof)], dtype=torch.float32)


def sample_weights(labels: Sequence[int]) -> list[float]:
    """Per-sample drawing weights under which both classes are drawn equally often."""
    weights = class_loss_weights(labels).tolist()
    return [weights[int(label)] for label in labels]


def balanced_sampler(labels: Sequence[int], generator: torch.Generator) -> WeightedRandomSampler:
    """Draws (with replacement) live and spoof equally often; an epoch keeps its length."""
    weights = sample_weights(labels)
    return WeightedRandomSampler(
        weights, num_samples=len(weights), replacement=True, generator=generator
    )
