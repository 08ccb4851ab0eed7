"""Face-model throughput ceilings on a bare GPU host: SCRFD detection and ArcFace-style recognition.

The GPU hosts we can measure on reach no package registry and have PyTorch (CUDA), onnx,
a CPU-only onnxruntime, numpy and OpenCV, but no onnxruntime-gpu. So the ONNX graphs are
converted to PyTorch with onnx2torch (a pure-Python wheel brought along) and timed on the
GPU in fp32 (TF32 off), TF32 and fp16 (``.half()``) at batch 1, 8, 32 and 64; the same
graphs are timed on the host's CPU with torch and onnxruntime (batch 1 and 8). Numbers
are model-only ceilings (input already on the device; a second figure adds the host to
device copy of the input and the copy back of the outputs), not the worker's pipeline.

Self-contained: standard library, numpy, onnx, onnxruntime, torch, cv2 (and onnx2torch,
imported from ``.whl/onnx2torch-*.whl`` in the repository when it is not installed);
matplotlib is used for the figure when present, OpenCV draws it otherwise. Of the project
only ``workers.inference.onnx_batch`` is imported (onnx and numpy only; the GPU host has
no insightface).

Both test-pack graphs were exported with a fixed batch of 1. The batch dimension is
opened in the ONNX graph before conversion (see ``open_batch``), and every run checks
that batched outputs equal one-by-one outputs of the original graph in onnxruntime, and
that torch (CPU, GPU fp32/TF32/fp16) agrees with onnxruntime; the differences are in the
JSON under ``checks``.

Run from the repository root (see tests/bench/gpu/README.md for the GPU host):

    .venv/bin/python tests/bench/gpu/bench_face_models_gpu.py [--quick] [--cpu-only]
        [--models DIR] [--faces DIR] [--out FILE]

Results: ``$OUT/bench_face_models_gpu.{json,png}`` when ``OUT`` is set, else
``out/bench/gpu/``. Exit status 1 when a correctness check fails (after writing the JSON).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("FACEAUTH_SHARED_DIR") or ROOT / ".." / "shared")
DEFAULT_MODELS = SHARED / "models" / "facepack-test"
DEFAULT_FACES = SHARED / "faces" / "identities"
DETECTOR_FILE = "det_500m.onnx"
RECOGNIZER_FILE = "w128_mobilefacenet.onnx"
NAME = "bench_face_models_gpu"

DET_SIZE = 640  # the configured FACEAUTH_FACE_DET_SIZE
REC_SIZE = 112
GPU_BATCHES = (1, 8, 32, 64)
CPU_BATCHES = (1, 8)
GPU_PRECISIONS = ("fp32", "tf32", "fp16")
FLAT_GAIN = 0.10  # throughput "flattens" once the next batch size adds less than this
# Correctness tolerances (absolute, on raw outputs). fp32 paths must agree this closely
# with one-by-one onnxruntime runs of the original graph; TF32 and fp16 are reported, and
# only checked loosely (a conversion bug shows up as differences of order 1).
TOL_FP32 = 1e-3
# Embeddings in reduced precision are judged by cosine only (raw values are unnormalised).
TOL_REDUCED = {"scores": 0.05, "boxes": 0.5, "landmarks": 0.5, "embedding": float("inf")}
MIN_COSINE_REDUCED = 0.999
# InsightFace's ArcFace 5-point template for 112x112 crops.
ARCFACE_DST = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
LOAD_AT_START = [round(x, 2) for x in os.getloadavg()]
T0 = time.monotonic()

warnings.filterwarnings("ignore", module="onnx2torch")  # per-op "results might differ" notes


def _stub_torchvision() -> str:
    """torchvision's version, or a stub standing in for it when it is not installed.

    onnx2torch imports ``torchvision.ops`` at import time for its NMS and RoiAlign
    converters, which neither face model uses; a stub keeps a host without torchvision usable.
    """
    try:
        import torchvision
    except ImportError:
        import types

        def missing(*_args: object, **_kwargs: object) -> None:
            raise NotImplementedError("torchvision is not installed")

        ops = types.ModuleType("torchvision.ops")
        ops.nms = ops.roi_align = ops.box_convert = missing  # type: ignore[attr-defined]
        stub = types.ModuleType("torchvision")
        stub.ops = ops  # type: ignore[attr-defined]
        sys.modules.update({"torchvision": stub, "torchvision.ops": ops})
        return "not installed (stub)"
    return str(torchvision.__version__)


def _import_onnx2torch() -> tuple[Any, str]:
    """onnx2torch and its version: installed, or straight from ``<repo>/.whl/*.whl``.

    A pure-Python wheel is a zip archive, so putting it on ``sys.path`` imports it.
    """
    from importlib import metadata

    try:
        import onnx2torch
    except ImportError:
        wheels = sorted((ROOT / ".whl").glob("onnx2torch-*.whl"))
        if not wheels:
            raise SystemExit(
                "onnx2torch not importable and no .whl/onnx2torch-*.whl in the repository; "
                "see tests/bench/gpu/README.md"
            ) from None
        sys.path.insert(0, str(wheels[-1]))
        import onnx2torch

        return onnx2torch, f"{wheels[-1].name.split('-')[1]} (zipimport of .whl/{wheels[-1].name})"
    try:
        return onnx2torch, metadata.version("onnx2torch")
    except metadata.PackageNotFoundError:
        return onnx2torch, "unknown"


TORCHVISION = _stub_torchvision()
onnx2torch, ONNX2TORCH_VERSION = _import_onnx2torch()
sys.path.insert(0, str(ROOT))  # the workers' graph surgery, run from anywhere
from onnx2torch.node_converters.shape import OnnxShape  # noqa: E402

from workers.inference.onnx_batch import open_batch as _open_batch  # noqa: E402

# --- graphs -----------------------------------------------------------------------------------


def open_batch(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The workers' own graph surgery (``workers.inference.onnx_batch``), SCRFD heads split."""
    return _open_batch(model, split_flattened_heads=True)


def ort_session(model: onnx.ModelProto, threads: int = 0) -> ort.InferenceSession:
    """A CPU session configured like the workers' (onnx_session.session_options)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
    )


class _HostShape(torch.nn.Module):
    """ONNX Shape returning a CPU tensor, so shape arithmetic never syncs with the GPU."""

    def __init__(self, start: int = 0, end: int | None = None) -> None:
        super().__init__()
        self.start = start
        self.end = end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(x.shape[self.start : self.end], dtype=torch.int64)


def to_torch(model: onnx.ModelProto, device: str, half: bool = False) -> torch.nn.Module:
    """onnx2torch conversion on ``device``; shape arithmetic (Shape, integer constants) on CPU.

    onnx2torch keeps ONNX shape subgraphs as tensors on the model's device, and its Reshape
    and Resize read them back with ``tolist()``: a device sync each. Keeping them on the
    host removes those syncs (measured on CUDA: ``checks.*.host_syncs_per_forward``).
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    module = onnx2torch.convert(copy).eval()
    for name, child in list(module.named_children()):
        if isinstance(child, OnnxShape):
            setattr(module, name, _HostShape(child._start, child._end))
    module = module.to(device)
    if half:
        module = module.half()
    for sub in module.modules():
        for key, buf in list(sub._buffers.items()):
            if buf is not None and not buf.is_floating_point():
                sub._buffers[key] = buf.cpu()
    return module


def device_dry_run(model: onnx.ModelProto, shape: tuple[int, ...]) -> dict[str, Any]:
    """``to_torch``'s placement checked without a GPU: weights and input on ``meta``.

    The "meta" device stands in for CUDA: a read of a device tensor on the host
    (``tolist()``, ``item()``: a sync on CUDA) or a CPU/device mix fails there as it would
    on the GPU, so a CPU-only run already shows whether the GPU part can run.
    """
    out: dict[str, Any] = {"device": "meta (stands in for cuda)", "ok": True}
    for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        module = to_torch(model, "cpu", half=dtype == torch.float16)
        for sub in module.modules():
            for store in (sub._parameters, sub._buffers):
                for key, t in list(store.items()):
                    if t is not None and t.is_floating_point():
                        meta = t.detach().to("meta")
                        is_param = store is sub._parameters
                        store[key] = (
                            torch.nn.Parameter(meta, requires_grad=False) if is_param else meta
                        )
        try:
            outs = torch_run(module, torch.empty(shape, device="meta", dtype=dtype))
            out[precision] = [list(o.shape) for o in outs]
        except Exception as exc:
            out[precision] = f"{type(exc).__name__}: {exc}"[:300]
            out["ok"] = False
    return out


def torch_run(module: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.inference_mode():
        out = module(x)
    return list(out) if isinstance(out, tuple | list) else [out]


def output_groups(session: ort.InferenceSession, detector: bool) -> list[str]:
    """Group name of each output: SCRFD's by width (1 score, 4 box, 10 landmark values)."""
    if not detector:
        return ["embedding" for _ in session.get_outputs()]
    names = {1: "scores", 4: "boxes", 10: "landmarks"}
    return [names[int(o.shape[-1])] for o in session.get_outputs()]


# --- inputs -----------------------------------------------------------------------------------


def load_photos(folder: Path | None, count: int = 12) -> tuple[list[np.ndarray], list[str], str]:
    """BGR photos under ``folder`` (sorted) with their folder names (the person), and a note.

    Seeded synthetic images, without labels, when there are no photos.
    """
    photos: list[np.ndarray] = []
    labels: list[str] = []
    if folder is not None and folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in {".jpg", ".jpeg", ".png"}:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is not None:
                    photos.append(image)
                    labels.append(path.parent.name)
    if photos:
        return photos, labels, f"{len(photos)} photos from {folder}"
    rng = np.random.default_rng(0)
    synthetic = [
        cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
        for _ in range(count)
    ]
    return synthetic, [], f"{count} synthetic 480x640 images (no photos found)"


def letterbox(image: np.ndarray, size: int = DET_SIZE) -> tuple[np.ndarray, float]:
    """InsightFace SCRFD's input: aspect kept, top-left aligned, zero padded; and the scale."""
    h, w = image.shape[:2]
    if h / w > 1.0:
        new_h, new_w = size, int(size / (h / w))
    else:
        new_w, new_h = size, int(size * (h / w))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    return canvas, new_h / h


def blob(images: Sequence[np.ndarray], mean: float, std: float) -> np.ndarray:
    """NCHW float32 RGB ``(pixel - mean) / std`` (cv2.dnn.blobFromImage with swapRB)."""
    stack = np.stack(images)[..., ::-1].astype(np.float32)
    return np.ascontiguousarray(((stack - mean) / std).transpose(0, 3, 1, 2))


def top_face(outputs: Sequence[np.ndarray], groups: Sequence[str]) -> dict[str, Any]:
    """The highest-scoring anchor of one image's SCRFD outputs: score, box, 5 landmarks.

    Outputs are per stride in each group, strides 8, 16, 32, two anchors per location, in
    the letterboxed image's pixels (InsightFace's distance2bbox / distance2kps).
    """
    by_group: dict[str, list[np.ndarray]] = {}
    for out, group in zip(outputs, groups, strict=True):
        by_group.setdefault(group, []).append(
            np.asarray(out, dtype=np.float32).reshape(-1, out.shape[-1])
        )
    best: dict[str, Any] = {"score": -1.0}
    for level, stride in enumerate((8, 16, 32)):
        scores = by_group["scores"][level][:, 0]
        i = int(np.argmax(scores))
        if scores[i] <= best["score"]:
            continue
        cells = DET_SIZE // stride
        loc = i // 2
        cx, cy = (loc % cells) * stride, (loc // cells) * stride
        d = by_group["boxes"][level][i] * stride
        k = by_group["landmarks"][level][i].reshape(5, 2) * stride + np.array([cx, cy])
        best = {
            "score": float(scores[i]),
            "box": np.array([cx - d[0], cy - d[1], cx + d[2], cy + d[3]]),
            "landmarks": k,
        }
    return best


def aligned_face(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """112x112 crop aligned on the ArcFace template (similarity transform, as InsightFace)."""
    matrix, _ = cv2.estimateAffinePartial2D(
        landmarks.astype(np.float32), ARCFACE_DST, method=cv2.LMEDS
    )
    if matrix is None:
        return cv2.resize(image, (REC_SIZE, REC_SIZE))
    return cv2.warpAffine(image, matrix, (REC_SIZE, REC_SIZE), borderValue=0.0)


# --- correctness ------------------------------------------------------------------------------


def diff_summary(
    got: Sequence[Sequence[np.ndarray]],
    ref: Sequence[Sequence[np.ndarray]],
    groups: Sequence[str],
    tol: dict[str, float] | float,
) -> dict[str, Any]:
    """Max abs difference per output group over images; ``ok`` against ``tol``.

    ``got`` and ``ref`` are per image, each a list of that image's outputs (batch axis
    removed). Embeddings also get the lowest cosine similarity.
    """
    out: dict[str, Any] = {}
    ok = True
    for group in dict.fromkeys(groups):
        idx = [i for i, g in enumerate(groups) if g == group]
        diff = max(
            float(np.max(np.abs(np.asarray(g[i], np.float32) - np.asarray(r[i], np.float32))))
            for g, r in zip(got, ref, strict=True)
            for i in idx
        )
        scale = max(float(np.max(np.abs(r[i]))) for r in ref for i in idx)
        limit = tol if isinstance(tol, float) else tol[group]
        entry: dict[str, Any] = {
            "max_abs_diff": diff,
            "ref_max_abs": round(scale, 4),
            "tol": limit if np.isfinite(limit) else None,
        }
        ok = ok and diff <= limit
        if group == "embedding":
            cos = []
            for g, r in zip(got, ref, strict=True):
                a = np.asarray(g[idx[0]], np.float64).ravel()
                b = np.asarray(r[idx[0]], np.float64).ravel()
                cos.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
            entry["min_cosine"] = min(cos)
            if not isinstance(tol, float):  # reduced precision
                entry["min_cosine_required"] = MIN_COSINE_REDUCED
                ok = ok and min(cos) >= MIN_COSINE_REDUCED
        out[group] = entry
    out["ok"] = ok
    return out


def split_batch(outputs: Sequence[np.ndarray], n: int) -> list[list[np.ndarray]]:
    """Batched outputs (N, ...) as per-image lists."""
    return [[np.asarray(o)[i] for o in outputs] for i in range(n)]


def top_face_diffs(
    got: Sequence[Sequence[np.ndarray]], ref: Sequence[Sequence[np.ndarray]], groups: Sequence[str]
) -> dict[str, float]:
    """How far each image's top face (score, box, landmarks in pixels) moved against ``ref``.

    Only images with a confident face (score >= 0.5) count: on synthetic inputs the top
    anchor is a near-tie and may jump anywhere.
    """
    ds, db, dk = [], [], []
    for g, r in zip(got, ref, strict=True):
        a, b = top_face(g, groups), top_face(r, groups)
        if b["score"] < 0.5:
            continue
        ds.append(abs(a["score"] - b["score"]))
        db.append(float(np.max(np.abs(a["box"] - b["box"]))))
        dk.append(float(np.max(np.abs(a["landmarks"] - b["landmarks"]))))
    if not ds:
        return {}
    return {"score": max(ds), "box_px": max(db), "landmarks_px": max(dk)}


def count_syncs(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Host-device synchronisations in one forward (CUDA only)."""
    torch_run(module, x)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            torch_run(module, x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def set_precision(precision: str) -> None:
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def check_model(
    kind: str,
    original: onnx.ModelProto,
    opened: onnx.ModelProto,
    inputs: np.ndarray,
    gpu: bool,
) -> dict[str, Any]:
    """Batched vs one-by-one, torch vs onnxruntime, reduced precision vs fp32."""
    detector = kind == "detection"
    n = inputs.shape[0]
    ref_sess = ort_session(original)
    groups = output_groups(ref_sess, detector)
    opened_sess = ort_session(opened)
    # Per-image output shapes of the opened graph: (A, C) for SCRFD's heads, whose original
    # outputs have no batch axis, (D,) for the recognizer's (1, D).
    per_image = [
        np.asarray(o).shape[1:]
        for o in opened_sess.run(None, {opened_sess.get_inputs()[0].name: inputs[:1]})
    ]
    ref = [
        [
            np.asarray(o).reshape(shape)
            for o, shape in zip(
                ref_sess.run(None, {ref_sess.get_inputs()[0].name: inputs[i : i + 1]}),
                per_image,
                strict=True,
            )
        ]
        for i in range(n)
    ]
    result: dict[str, Any] = {
        "images": n,
        "reference": "onnxruntime CPU, original graph, one image per run",
    }
    got = opened_sess.run(None, {opened_sess.get_inputs()[0].name: inputs})
    result["ort_batched_vs_single"] = diff_summary(split_batch(got, n), ref, groups, TOL_FP32)
    result["device_dry_run"] = device_dry_run(opened, tuple(inputs.shape))

    cpu32 = to_torch(opened, "cpu")
    x = torch.from_numpy(inputs)
    batched = [t.numpy() for t in torch_run(cpu32, x)]
    result["torch_cpu_fp32_batched_vs_ort_single"] = diff_summary(
        split_batch(batched, n), ref, groups, TOL_FP32
    )
    single = [[t.numpy()[0] for t in torch_run(cpu32, x[i : i + 1])] for i in range(n)]
    result["torch_cpu_fp32_single_vs_ort_single"] = diff_summary(single, ref, groups, TOL_FP32)
    cpu16 = to_torch(opened, "cpu", half=True)
    try:
        half = [t.float().numpy() for t in torch_run(cpu16, x.half())]
        entry = diff_summary(split_batch(half, n), ref, groups, TOL_REDUCED)
        if detector:
            entry["top_face"] = top_face_diffs(split_batch(half, n), ref, groups)
        result["torch_cpu_fp16_batched_vs_ort_single"] = entry
    except (RuntimeError, NotImplementedError) as exc:  # older CPUs / torch builds
        result["torch_cpu_fp16_batched_vs_ort_single"] = {"skipped": str(exc)[:200], "ok": True}

    if gpu:
        for precision in GPU_PRECISIONS:
            key = f"torch_cuda_{precision}_batched_vs_ort_single"
            try:
                result[key] = check_cuda(opened, x, precision, ref, groups, detector)
            except Exception as exc:  # record it and go on: the host's time is scarce
                result[key] = {"error": f"{type(exc).__name__}: {exc}"[:500], "ok": False}
        set_precision("fp32")
        torch.cuda.empty_cache()
    result["ok"] = all(v.get("ok", True) for v in result.values() if isinstance(v, dict))
    return result


def check_cuda(
    opened: onnx.ModelProto,
    x: torch.Tensor,
    precision: str,
    ref: list[list[np.ndarray]],
    groups: list[str],
    detector: bool,
) -> dict[str, Any]:
    """The converted model on the GPU in ``precision``: batched against the ORT reference
    and against its own one-by-one runs, the top faces' shift, host syncs per forward."""
    n = x.shape[0]
    set_precision(precision)
    module = to_torch(opened, "cuda", half=precision == "fp16")
    xg = x.cuda().half() if precision == "fp16" else x.cuda()
    outs = split_batch([t.float().cpu().numpy() for t in torch_run(module, xg)], n)
    tol = TOL_FP32 if precision == "fp32" else TOL_REDUCED
    entry = diff_summary(outs, ref, groups, tol)
    singles = [
        [t.float().cpu().numpy()[0] for t in torch_run(module, xg[i : i + 1])] for i in range(n)
    ]
    same = diff_summary(outs, singles, groups, tol)
    entry["batched_vs_single_same_precision"] = same
    entry["ok"] = entry["ok"] and same["ok"]
    if detector:
        entry["top_face"] = top_face_diffs(outs, ref, groups)
    entry["host_syncs_per_forward"] = count_syncs(module, xg)
    return entry


def embedding_sanity(embeddings: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Genuine / impostor cosine ranges of the photos (same folder = same person)."""
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sims = e @ e.T
    genuine, impostor = [], []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            (genuine if labels[i] == labels[j] else impostor).append(float(sims[i, j]))
    return {
        "genuine_min": round(min(genuine), 3) if genuine else None,
        "genuine_max": round(max(genuine), 3) if genuine else None,
        "impostor_max": round(max(impostor), 3) if impostor else None,
    }


# --- timing -----------------------------------------------------------------------------------


class Clock:
    """Deadline for the whole run: cells that would start after it are skipped."""

    def __init__(self, limit_s: float) -> None:
        self.deadline = T0 + limit_s

    def left(self) -> float:
        return self.deadline - time.monotonic()


def timed(
    fn: Callable[[], object],
    sync: Callable[[], None],
    warmup: int,
    max_reps: int,
    min_reps: int,
    budget_s: float,
) -> list[float]:
    """Seconds per call after ``warmup`` calls: at least ``min_reps``, then until the budget."""
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (
        len(times) < min_reps or time.perf_counter() - start < budget_s
    ):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return times


def row(
    model: str, device: str, runtime: str, precision: str, batch: int, times: list[float]
) -> dict[str, Any]:
    med = statistics.median(times)
    return {
        "model": model,
        "device": device,
        "runtime": runtime,
        "precision": precision,
        "batch": batch,
        "images_per_s": round(batch / med, 1),
        "median_ms": round(med * 1e3, 3),
        "min_ms": round(min(times) * 1e3, 3),
        "max_ms": round(max(times) * 1e3, 3),
        "reps": len(times),
    }


def batch_of(inputs: np.ndarray, size: int) -> np.ndarray:
    """``size`` inputs cycling through the prepared ones."""
    idx = [i % inputs.shape[0] for i in range(size)]
    return np.ascontiguousarray(inputs[idx])


def bench_gpu(
    kind: str, opened: onnx.ModelProto, inputs: np.ndarray, args: argparse.Namespace, clock: Clock
) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    torch.backends.cudnn.benchmark = True
    for precision in args.precisions:
        set_precision(precision)
        half = precision == "fp16"
        try:
            module = to_torch(opened, "cuda", half=half)
        except Exception as exc:
            skipped.append(f"{kind} cuda {precision}: {type(exc).__name__}: {exc}"[:500])
            continue
        for b in args.gpu_batches:
            if clock.left() < 5:
                skipped.append(f"{kind} cuda {precision} batch {b}: time limit")
                continue
            host = torch.from_numpy(batch_of(inputs, b))
            host = (host.half() if half else host).pin_memory()
            dev = host.cuda()

            def resident(m: torch.nn.Module = module, d: torch.Tensor = dev) -> object:
                return torch_run(m, d)

            def with_copies(m: torch.nn.Module = module, h: torch.Tensor = host) -> object:
                return [t.cpu() for t in torch_run(m, h.cuda(non_blocking=True))]

            try:
                t_res = timed(
                    resident,
                    torch.cuda.synchronize,
                    args.gpu_warmup,
                    args.gpu_reps,
                    5,
                    args.gpu_budget,
                )
                t_cp = timed(
                    with_copies, torch.cuda.synchronize, 2, args.gpu_reps, 5, args.gpu_budget
                )
            except Exception as exc:  # out of memory, a conversion gap: note it, go on
                skipped.append(
                    f"{kind} cuda {precision} batch {b}: {type(exc).__name__}: {exc}"[:500]
                )
                torch.cuda.empty_cache()
                continue
            r = row(kind, "cuda", "torch+onnx2torch", precision, b, t_res)
            r["images_per_s_with_copies"] = round(b / statistics.median(t_cp), 1)
            r["median_ms_with_copies"] = round(statistics.median(t_cp) * 1e3, 3)
            rows.append(r)
            print_row(r)
            del host, dev
        del module
        torch.cuda.empty_cache()
    set_precision("fp32")
    return rows, skipped


def bench_cpu(
    kind: str, opened: onnx.ModelProto, inputs: np.ndarray, args: argparse.Namespace, clock: Clock
) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    sess = ort_session(opened, args.ort_threads)
    name = sess.get_inputs()[0].name
    module = to_torch(opened, "cpu")
    for b in args.cpu_batches:
        x = batch_of(inputs, b)
        xt = torch.from_numpy(x)
        for runtime, fn in (
            ("onnxruntime", lambda x=x: sess.run(None, {name: x})),
            ("torch+onnx2torch", lambda xt=xt: torch_run(module, xt)),
        ):
            if clock.left() < 3 * args.cpu_budget:
                skipped.append(f"{kind} cpu {runtime} batch {b}: time limit")
                continue
            times = timed(fn, lambda: None, 1, args.cpu_reps, 2, args.cpu_budget)
            r = row(kind, "cpu", runtime, "fp32", b, times)
            rows.append(r)
            print_row(r)
    return rows, skipped


def flattening(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per series: gains between successive batch sizes and where throughput flattens."""
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault(f"{r['model']} {r['device']} {r['runtime']} {r['precision']}", []).append(
            r
        )
    out: dict[str, Any] = {}
    for key, items in series.items():
        items = sorted(items, key=lambda r: r["batch"])
        gains = [
            {
                "from": a["batch"],
                "to": b["batch"],
                "gain": round(b["images_per_s"] / a["images_per_s"] - 1, 3),
            }
            for a, b in itertools.pairwise(items)
        ]
        flat = next((g["from"] for g in gains if g["gain"] < FLAT_GAIN), None)
        best = max(items, key=lambda r: r["images_per_s"])
        out[key] = {
            "gains": gains,
            "flattens_after_batch": flat,
            "note": None
            if flat is not None
            else f"still gaining >= {FLAT_GAIN:.0%} at the largest batch measured",
            "best_batch": best["batch"],
            "best_images_per_s": best["images_per_s"],
        }
    return out


# --- output -----------------------------------------------------------------------------------


def print_row(r: dict[str, Any]) -> None:
    extra = (
        f", {r['images_per_s_with_copies']:.1f}/s with copies"
        if "images_per_s_with_copies" in r
        else ""
    )
    print(
        f"  {r['model']:<11} {r['device']:<4} {r['runtime']:<16} {r['precision']:<4} "
        f"b{r['batch']:<3} {r['images_per_s']:>9.1f} img/s  median {r['median_ms']:.2f} ms "
        f"({r['reps']} reps){extra}",
        flush=True,
    )


def machine_info(gpu: bool) -> dict[str, Any]:
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "onnx2torch": ONNX2TORCH_VERSION,
        "torchvision": TORCHVISION,
        "torch": torch.__version__,
        "torch_cpu_threads": torch.get_num_threads(),
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if gpu:
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_count=torch.cuda.device_count(),
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def model_info(path: Path, original: onnx.ModelProto, edits: list[str]) -> dict[str, Any]:
    def shape(v: onnx.ValueInfoProto) -> list[int | str]:
        return [
            d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in v.type.tensor_type.shape.dim
        ]

    return {
        "file": path.name,
        "size_bytes": path.stat().st_size,
        "sha256_12": hashlib.sha256(path.read_bytes()).hexdigest()[:12],
        "opset": max(o.version for o in original.opset_import if o.domain in ("", "ai.onnx")),
        "input": {v.name: shape(v) for v in original.graph.input},
        "outputs": {v.name: shape(v) for v in original.graph.output},
        "batch_opening": edits,
    }


def plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    kinds = [k for k in ("detection", "recognition") if any(r["model"] == k for r in rows)]
    if not kinds:
        return
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in rows:
        label = f"{r['device']} {r['runtime'].split('+')[0]} {r['precision']}"
        series.setdefault((r["model"], label), []).append((r["batch"], r["images_per_s"]))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _plot_cv2(kinds, series, path, title)
        return
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 4.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for (model, label), pts in sorted(series.items()):
            if model == kind:
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted({b for (model, _), pts in series.items() if model == kind for b, _ in pts})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("batch size")
        ax.set_ylabel("images/s" if kind == "detection" else "faces/s")
        ax.set_title(
            f"{kind} ({DET_SIZE}x{DET_SIZE} letterboxed)"
            if kind == "detection"
            else f"{kind} (112x112)"
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_cv2(
    kinds: list[str], series: dict[tuple[str, str], list[tuple[int, float]]], path: Path, title: str
) -> None:
    """The same figure drawn with OpenCV (no matplotlib on the GPU host)."""
    w, h, m = 640, 440, 60
    colours = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
    ]
    panels = []
    for kind in kinds:
        img = np.full((h, w, 3), 255, np.uint8)
        items = sorted(
            (label, sorted(pts)) for (model, label), pts in series.items() if model == kind
        )
        xs = [p[0] for _, pts in items for p in pts]
        ys = [p[1] for _, pts in items for p in pts]
        lx0, lx1 = np.log2(min(xs)), max(np.log2(max(xs)), np.log2(min(xs)) + 1)
        ly0, ly1 = np.log10(min(ys)) - 0.1, np.log10(max(ys)) + 0.1

        def pt(
            bx: float,
            y: float,
            lx0: float = lx0,
            lx1: float = lx1,
            ly0: float = ly0,
            ly1: float = ly1,
        ) -> tuple[int, int]:
            px = m + (np.log2(bx) - lx0) / (lx1 - lx0) * (w - 2 * m)
            py = h - m - (np.log10(y) - ly0) / (ly1 - ly0) * (h - 2 * m)
            return int(px), int(py)

        cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
        for b in sorted(set(xs)):
            cv2.putText(
                img,
                str(b),
                (pt(b, 10**ly0)[0] - 8, h - m + 18),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                (0, 0, 0),
                1,
            )
        for i, (label, pts) in enumerate(items):
            c = colours[i % len(colours)][::-1]
            for a, b in itertools.pairwise(pts):
                cv2.line(img, pt(*a), pt(*b), c, 2)
            for p in pts:
                cv2.circle(img, pt(*p), 3, c, -1)
                cv2.putText(
                    img,
                    f"{p[1]:.0f}",
                    (pt(*p)[0] + 4, pt(*p)[1] - 4),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.33,
                    c,
                    1,
                )
            cv2.putText(img, label, (m + 6, m + 16 + 14 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.4, c, 1)
        unit = "images/s" if kind == "detection" else "faces/s"
        cv2.putText(
            img,
            f"{kind}: {unit} vs batch (log-log)",
            (m, m - 20),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (0, 0, 0),
            1,
        )
        panels.append(img)
    out = np.hstack(panels)
    cv2.putText(out, title[:150], (8, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.imwrite(str(path), out)


def default_out() -> Path:
    folder = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "out" / "bench" / "gpu"
    return folder / f"{NAME}.json"


def parse_batches(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"{NAME}.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        type=Path,
        default=DEFAULT_MODELS,
        help=f"folder with {DETECTOR_FILE} and {RECOGNIZER_FILE}",
    )
    p.add_argument("--detector", type=Path, help="detector ONNX (default: <models>/det_500m.onnx)")
    p.add_argument(
        "--recognizer",
        type=Path,
        help="recognizer ONNX (default: <models>/w128_mobilefacenet.onnx)",
    )
    p.add_argument(
        "--faces",
        type=Path,
        default=DEFAULT_FACES,
        help="photos (recursively); synthetic images if none",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results (PNG beside it); default $OUT or out/bench/gpu",
    )
    p.add_argument("--quick", action="store_true", help="fewer repetitions and check images")
    p.add_argument(
        "--cpu-only", action="store_true", help="skip the GPU even when CUDA is available"
    )
    p.add_argument("--checks-only", action="store_true", help="correctness checks, no timings")
    p.add_argument("--gpu-batches", type=parse_batches, default=GPU_BATCHES)
    p.add_argument("--cpu-batches", type=parse_batches, default=CPU_BATCHES)
    p.add_argument(
        "--precisions",
        type=lambda s: tuple(s.split(",")),
        default=GPU_PRECISIONS,
        help="of fp32,tf32,fp16",
    )
    p.add_argument(
        "--ort-threads", type=int, default=0, help="onnxruntime intra-op threads (0: ORT's choice)"
    )
    p.add_argument(
        "--check-images",
        type=int,
        default=None,
        help="images in the correctness batch (8; 4 with --quick)",
    )
    p.add_argument(
        "--time-limit", type=float, default=210.0, help="seconds; later timing cells are skipped"
    )
    args = p.parse_args(argv)
    if bad := [x for x in args.precisions if x not in GPU_PRECISIONS]:
        p.error(f"unknown precision(s) {bad}")
    args.detector = args.detector or args.models / DETECTOR_FILE
    args.recognizer = args.recognizer or args.models / RECOGNIZER_FILE
    args.out = args.out or default_out()
    args.check_images = args.check_images or (4 if args.quick else 8)
    args.gpu_warmup, args.gpu_reps, args.gpu_budget = (3, 10, 0.3) if args.quick else (5, 30, 1.5)
    args.cpu_reps, args.cpu_budget = (3, 0.3) if args.quick else (10, 3.0)
    return args


# --- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    clock = Clock(args.time_limit)
    gpu = torch.cuda.is_available() and not args.cpu_only
    why_no_gpu = None if gpu else ("--cpu-only" if args.cpu_only else "CUDA not available to torch")
    where = f"yes: {torch.cuda.get_device_name(0)}" if gpu else f"no ({why_no_gpu})"
    print(f"{NAME}: GPU {where}", flush=True)

    det_onnx = onnx.load(str(args.detector))
    rec_onnx = onnx.load(str(args.recognizer))
    det_open, det_edits = open_batch(det_onnx)
    rec_open, rec_edits = open_batch(rec_onnx)

    # Inputs: letterboxed photos for detection; faces aligned on SCRFD's top landmarks.
    photos, labels, source = load_photos(args.faces)
    boxed = [letterbox(p) for p in photos]
    det_inputs = blob([b[0] for b in boxed], 127.5, 128.0)
    ref_det = ort_session(det_onnx)
    det_groups = output_groups(ref_det, detector=True)
    det_name = ref_det.get_inputs()[0].name
    faces, det_scores = [], []
    for photo, (_, scale), i in zip(photos, boxed, range(len(photos)), strict=True):
        top = top_face(ref_det.run(None, {det_name: det_inputs[i : i + 1]}), det_groups)
        det_scores.append(round(top["score"], 3))
        faces.append(aligned_face(photo, top["landmarks"] / scale))
    rec_inputs = blob(faces, 127.5, 127.5)  # InsightFace ArcFaceONNX's normalisation

    k = min(args.check_images, len(photos))
    print(f"checks on {k} images ...", flush=True)
    checks = {
        "detection": check_model("detection", det_onnx, det_open, det_inputs[:k], gpu),
        "recognition": check_model("recognition", rec_onnx, rec_open, rec_inputs[:k], gpu),
    }
    sanity: dict[str, Any] = {"top_face_scores": det_scores}
    if labels:
        ref_rec = ort_session(rec_onnx)
        rname = ref_rec.get_inputs()[0].name
        emb = np.concatenate(
            [ref_rec.run(None, {rname: rec_inputs[i : i + 1]})[0] for i in range(len(faces))]
        )
        sanity["cosine_onnxruntime"] = embedding_sanity(emb, labels)
        cpu16 = to_torch(rec_open, "cpu", half=True)
        try:
            emb16 = torch_run(cpu16, torch.from_numpy(rec_inputs).half())[0].float().numpy()
            sanity["cosine_torch_cpu_fp16"] = embedding_sanity(emb16, labels)
        except (RuntimeError, NotImplementedError):
            pass
    for kind, result in checks.items():
        print(f"  {kind}: {'ok' if result['ok'] else 'FAILED'}", flush=True)
        for key, value in result.items():
            if isinstance(value, dict) and "ok" in value:
                parts = [
                    f"{g} {v['max_abs_diff']:.2e}"
                    + (f" cos>={v['min_cosine']:.5f}" if "min_cosine" in v else "")
                    for g, v in value.items()
                    if isinstance(v, dict) and "max_abs_diff" in v
                ]
                if value.get("top_face"):
                    parts.append(
                        "top face: "
                        + ", ".join(f"{k} {v:.2g}" for k, v in value["top_face"].items())
                    )
                if "host_syncs_per_forward" in value:
                    parts.append(f"host syncs/forward {value['host_syncs_per_forward']}")
                detail = (
                    ", ".join(parts)
                    or value.get("skipped")
                    or value.get("error")
                    or value.get("device")
                )
                status = "ok" if value["ok"] else "FAILED"
                print(f"    {key}: {status}; {detail or ''}", flush=True)

    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    load_before_timing = [round(x, 2) for x in os.getloadavg()]
    if not args.checks_only:
        kinds = (("detection", det_open, det_inputs), ("recognition", rec_open, rec_inputs))
        if gpu:
            print("GPU timings ...", flush=True)
            for kind, model, inputs in kinds:
                r, s = bench_gpu(kind, model, inputs, args, clock)
                rows += r
                skipped += s
        print("CPU timings ...", flush=True)
        for kind, model, inputs in kinds:
            r, s = bench_cpu(kind, model, inputs, args, clock)
            rows += r
            skipped += s

    doc = {
        "bench": NAME,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - T0, 1),
        "machine": machine_info(gpu),
        "load_average_1_5_15": {
            "start": LOAD_AT_START,
            "before_timing": load_before_timing,
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "gpu_measured": gpu,
        "gpu_skipped_because": why_no_gpu,
        "settings": {
            "det_size": DET_SIZE,
            "rec_size": REC_SIZE,
            "gpu_batches": list(args.gpu_batches) if gpu else [],
            "cpu_batches": list(args.cpu_batches),
            "precisions": list(args.precisions) if gpu else [],
            "quick": args.quick,
            "timing": (
                "median of timed calls after warm-up; GPU calls end with torch.cuda.synchronize; "
                "GPU 'images_per_s' with the input already on the GPU, '_with_copies' adds the "
                "pinned host->device input copy and the outputs' copy back"
            ),
            "fp32_means": "TF32 off (torch.backends.cudnn.allow_tf32 = False); 'tf32' allows it",
            "fp16_means": "module.half() and fp16 input (all layers fp16, as TensorRT FP16 would)",
            "ort_intra_op_threads": args.ort_threads or "ORT default",
            "flat_gain": FLAT_GAIN,
        },
        "inputs": {
            "source": source,
            "detection": list(det_inputs.shape),
            "recognition": list(rec_inputs.shape),
        },
        "models": {
            "detection": model_info(args.detector, det_onnx, det_edits),
            "recognition": model_info(args.recognizer, rec_onnx, rec_edits),
        },
        "checks": checks,
        "checks_ok": all(c["ok"] for c in checks.values()),
        "sanity": sanity,
        "throughput": rows,
        "flattening": flattening(rows),
        "skipped": skipped,
        "not_measured": [
            "onnxruntime-gpu (CUDA execution provider), the production GPU path: not on the host",
            "TensorRT (FP16 engines): not on the host",
            "the worker's pipeline (decode, letterbox, NMS, alignment, queue): model calls only",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"results written to {args.out}")
    if rows:
        png = args.out.with_suffix(".png")
        m = doc["machine"]
        load = doc["load_average_1_5_15"]["end"]
        title = f"{m.get('gpu', 'no GPU')}; CPU {m['cpu']} x{m['cpus']}; load average {load}"
        plot(rows, png, title)
        print(f"figure written to {png}")
    for key, value in doc["flattening"].items():
        best = f"best b{value['best_batch']} {value['best_images_per_s']}/s"
        print(f"  {key}: flattens after batch {value['flattens_after_batch']} ({best})")
    print(f"done in {doc['elapsed_s']} s; checks {'ok' if doc['checks_ok'] else 'FAILED'}")
    return 0 if doc["checks_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
