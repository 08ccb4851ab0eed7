"""ONNX export and the ONNX-Runtime-vs-PyTorch check, with no pydantic or settings imports.

``export.py`` wraps these with the shared liveness contract (``LivenessSpec``); the GPU-host
script (``training/gpu``) calls them directly because that host has torch, onnx and ONNX
Runtime but not the project's pydantic stack.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

OPSET = 17
MAX_SOFTMAX_DIFF = 1e-4
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


def torch_onnx_export(model: nn.Module, onnx_path: Path, input_size: int) -> None:
    """Export a CPU fp32 model with a dynamic batch axis (input ``input``, output ``logits``)."""
    dummy = torch.zeros(1, 3, input_size, input_size, dtype=torch.float32)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript (not a dependency); the TorchScript path is exact for this CNN.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(onnx_path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )


def embed_metadata(onnx_path: Path, key: str, value: str) -> None:
    """Set ``metadata_props[key] = value`` (replacing any old entry) and check the model."""
    import onnx

    proto = onnx.load(str(onnx_path))
    kept = [p for p in proto.metadata_props if p.key != key]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(onnx_path))


def ort_logits(onnx_path: Path, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Logits of the exported model on the CPU execution provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out: npt.NDArray[np.float32] = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    return out


def max_softmax_diff(model: nn.Module, onnx_path: Path, batch: npt.NDArray[np.float32]) -> float:
    """Largest |softmax_ort - softmax_torch| over a batch (run on CPU for both)."""
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(batch)).numpy()
    return float(np.abs(softmax(ort_logits(onnx_path, batch)) - softmax(torch_logits)).max())
