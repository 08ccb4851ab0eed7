"""On-device augmentation for the GPU host: random serving-like crops of bundle faces.

Every step cuts each face afresh from its wider bundle crop (``bundle.py``) with a random
scale (+-10 %), shift (+-5 %) and horizontal flip, in one ``grid_sample`` call on the
device. No colour or blur jitter: that would erase the print and screen artefacts the model
must learn. The output is normalised as ``liveness.json`` says (RGB, /255, ImageNet).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.gpu.bundle import CropBundle
from training.liveness.model import IMAGENET_MEAN, IMAGENET_STD, PIXEL_SCALE

SCALE_JITTER = 0.10  # crop side x U(1 - j, 1 + j)
SHIFT_JITTER = 0.05  # crop centre moved by U(-j, j) crop sides


class Augmenter:
    """Random serving-like crops of bundle faces, computed on the device in one batch."""

    def __init__(self, bundle: CropBundle, device: torch.device) -> None:
        boxes = torch.as_tensor(bundle.boxes, dtype=torch.float32)
        side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        self.centre = ((boxes[:, :2] + boxes[:, 2:]) / 2.0).to(device)
        self.side = (side * bundle.crop_scale).to(device)  # the serving crop's side, pixels
        self.images = torch.from_numpy(bundle.crops).to(device)  # (N, S, S, 3) uint8 BGR
        self.size = bundle.size
        self.out = bundle.input_size
        self.device = device
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def __call__(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = len(index)
        draws = torch.rand(n, 4, generator=generator).to(self.device)
        idx = index.to(self.device)
        side = self.side[idx] * (1.0 + SCALE_JITTER * (2.0 * draws[:, 0] - 1.0))
        side = side.clamp(max=float(self.size))
        shift = SHIFT_JITTER * (2.0 * draws[:, 1:3] - 1.0) * side[:, None]
        half = side[:, None] / 2.0
        centre = torch.minimum(torch.maximum(self.centre[idx] + shift, half), self.size - half)
        flip = torch.where(draws[:, 3] < 0.5, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3, device=self.device)
        theta[:, 0, 0] = side / self.size * flip
        theta[:, 1, 1] = side / self.size
        theta[:, :, 2] = 2.0 * centre / self.size - 1.0
        pixels = self.images[idx].permute(0, 3, 1, 2).float()  # BGR, 0..255
        grid = F.affine_grid(theta, [n, 3, self.out, self.out], align_corners=False)
        crops = F.grid_sample(
            pixels, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        rgb = crops.flip(1) * PIXEL_SCALE  # BGR -> RGB, as normalise_bgr_batch does
        return (rgb - self.mean) / self.std
