"""A torch Dataset over cached face crops, normalised as the exported model expects."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from training.liveness.model import normalise_bgr_batch
from training.liveness.preprocess import CroppedSample


def init_loader_worker(_worker_id: int) -> None:
    """One OpenCV thread per DataLoader worker: N workers x all-core OpenCV pools would
    oversubscribe the CPU that has to keep the GPU fed."""
    cv2.setNumThreads(1)


class CropDataset(Dataset[tuple[torch.Tensor, int]]):
    """Yields (3xHxW float tensor, label). Crops are read from the PNG cache on demand."""

    def __init__(self, items: Sequence[CroppedSample]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        crop = cv2.imread(str(item.crop_path), cv2.IMREAD_COLOR)
        if crop is None:
            raise RuntimeError(f"cached crop {item.crop_path} is unreadable; delete the cache")
        batch: npt.NDArray[np.uint8] = np.asarray(crop, dtype=np.uint8)[np.newaxis]
        tensor = torch.from_numpy(normalise_bgr_batch(batch)[0])
        return tensor, item.sample.label

    def labels(self) -> list[int]:
        return [item.sample.label for item in self.items]
