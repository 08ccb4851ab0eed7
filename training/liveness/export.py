"""ONNX export of the trained classifier, described by the shared liveness contract.

The deployable folder holds exactly the ONNX file and ``liveness.json``; the same JSON is
embedded in the ONNX ``metadata_props`` so a lone file still describes itself. The export
only succeeds when ONNX Runtime reproduces PyTorch's softmax on a real batch, and when the
workers' own loader (``LivenessSpec.load``) reads the folder back.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from shared.liveness_spec import (
    ONNX_METADATA_KEY,
    SPEC_FILENAME,
    LivenessMember,
    LivenessSpec,
)
from training.liveness.model import (
    COLOR_ORDER,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LIVE_CLASS_INDEX,
    PIXEL_SCALE,
)
from training.liveness.onnx_io import (
    MAX_SOFTMAX_DIFF,
    embed_metadata,
    max_softmax_diff,
    torch_onnx_export,
)


class ExportCheckError(RuntimeError):
    """ONNX Runtime and PyTorch disagree, or the exported folder does not load."""


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    onnx_path: Path
    spec_path: Path
    max_softmax_diff: float
    spec: LivenessSpec


def build_spec(
    *,
    name: str,
    version: str,
    onnx_file: str,
    input_size: int,
    crop_scale: float,
    threshold: float,
    training: dict[str, Any],
    metrics: dict[str, Any],
    crop_shift: tuple[float, float] = (0.0, 0.0),
) -> LivenessSpec:
    """The contract for an exported EfficientNet: RGB, /255, ImageNet mean/std, live = 0.

    ``crop_scale`` and ``crop_shift`` are the *serving* crop around the serving detector's
    box (see ``calibration.py``), which may differ from the training crop_scale.
    """
    member = LivenessMember(
        file=onnx_file,
        crop_scale=crop_scale,
        square=True,
        crop_shift=crop_shift,
        input_width=input_size,
        input_height=input_size,
        color_order=COLOR_ORDER,
        pixel_scale=PIXEL_SCALE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        live_class_index=LIVE_CLASS_INDEX,
    )
    return LivenessSpec(
        name=name,
        version=version,
        members=(member,),
        default_threshold=threshold,
        # A JSON round trip turns tuples into lists now, so the spec equals its reloaded self.
        training=json.loads(json.dumps(training)),
        metrics=json.loads(json.dumps(metrics)),
    )


def export_onnx(
    model: nn.Module, folder: Path, spec: LivenessSpec, check_batch: npt.NDArray[np.float32]
) -> ExportResult:
    """Export ``model`` into ``folder`` (ONNX + ``liveness.json``), verified end to end.

    ``check_batch`` is (N, 3, H, W) float32, normalised as the spec says (real crops, so the
    check exercises the input distribution serving will see). On any failure the folder is
    left without a deployable model and ``ExportCheckError`` is raised.
    """
    member = spec.members[0]
    if check_batch.ndim != 4 or check_batch.shape[1:] != (
        3,
        member.input_height,
        member.input_width,
    ):
        raise ValueError(f"check batch has shape {check_batch.shape}, not (N, 3, H, W)")
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path, spec_path = folder / member.file, folder / SPEC_FILENAME
    for stale in (onnx_path, spec_path):
        stale.unlink(missing_ok=True)
    # A model trained channels-last on CUDA is exported in the default layout: the ONNX graph
    # and the ORT check must not depend on how training laid out its weights.
    cpu_model = copy.deepcopy(model).to("cpu").to(memory_format=torch.contiguous_format).eval()
    tmp_path = folder / f".{member.file}.tmp"
    try:
        torch_onnx_export(cpu_model, tmp_path, member.input_width)
        spec_json = spec.to_json()
        embed_metadata(tmp_path, ONNX_METADATA_KEY, spec_json)
        diff = max_softmax_diff(cpu_model, tmp_path, np.ascontiguousarray(check_batch))
        if not diff < MAX_SOFTMAX_DIFF:
            raise ExportCheckError(
                f"ONNX Runtime and PyTorch disagree: max softmax diff {diff:.2e} "
                f">= {MAX_SOFTMAX_DIFF:.0e}"
            )
        tmp_path.replace(onnx_path)
        spec_path.write_text(spec_json + "\n", encoding="utf-8")
        loaded = LivenessSpec.load(folder)
        if loaded != spec:
            raise ExportCheckError(f"{folder} reads back as a different spec than was written")
    except BaseException:
        for leftover in (tmp_path, onnx_path, spec_path):
            leftover.unlink(missing_ok=True)
        raise
    return ExportResult(folder, onnx_path, spec_path, diff, spec)
