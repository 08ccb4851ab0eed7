"""Liveness scoring speed: per-face latency (batch 1) and batched throughput.

Run from the repository root (pytest does not collect it: the name does not start with
``test_``):

    .venv/bin/python tests/bench/bench_liveness.py [--runs 50] [--effnet PATH] [--out FILE]

Models: the MiniFASNet pair from ../shared, and an EfficientNet-B2 at 260x260 when one is
given with ``--effnet`` (a liveness model folder or a lone ONNX file) or, failing that,
when torch + timm import: a randomly initialised timm ``efficientnet_b2`` (2 classes) is
exported to a temporary ONNX file; weights do not change its speed.

Timings are end to end through ``LivenessScorer.score_many`` (crop, normalise, one
``session.run`` per member, softmax) on real photos with SCRFD face boxes; the model-only
column times ``session.run`` on prepared input, to show the preprocessing share.
Set ``FACEAUTH_ORT_INTRA_OP_THREADS`` / ``FACEAUTH_ORT_PROVIDERS`` to bench other setups.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # runnable as a plain script

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
import onnxruntime as ort  # noqa: E402

from shared.config import get_settings  # noqa: E402
from shared.errors import ModelLoadError  # noqa: E402
from shared.liveness_spec import SPEC_FILENAME, LivenessMember, LivenessSpec  # noqa: E402
from workers.inference.face_pack import FacePack  # noqa: E402
from workers.inference.liveness import LivenessScorer  # noqa: E402

SHARED = Path(os.environ.get("FACEAUTH_SHARED_DIR") or ROOT / ".." / "shared").resolve()
MINIFASNET = SHARED / "models" / "liveness" / "minifasnet"
FACE_PACK = SHARED / "models" / "facepack-test"
BATCHES = (8, 32)
EFFNET_SIZE = 260

Item = tuple[npt.NDArray[np.uint8], list[float]]


def effnet_spec(file: str, size: int) -> LivenessSpec:
    """The contract's EfficientNet-B2 description (classes [live, spoof], ImageNet norm)."""
    return LivenessSpec(
        name="efficientnet_b2-bench",
        version="random-weights",
        members=(
            LivenessMember(
                file=file,
                crop_scale=1.6,
                square=True,
                input_width=size,
                input_height=size,
                color_order="RGB",
                pixel_scale=1 / 255,
                mean=(0.485, 0.456, 0.406),
                std=(0.229, 0.224, 0.225),
                live_class_index=0,
            ),
        ),
    )


def export_random_effnet(folder: Path) -> Path | None:
    """A random timm efficientnet_b2 as ONNX with a dynamic batch, or None without torch."""
    try:
        import timm
        import torch
    except ImportError as exc:
        print(f"EfficientNet-B2 skipped: {exc}", file=sys.stderr)
        return None
    model = timm.create_model("efficientnet_b2", pretrained=False, num_classes=2).eval()
    path = folder / "efficientnet_b2.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, EFFNET_SIZE, EFFNET_SIZE),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        opset_version=17,
        dynamo=False,  # the TorchScript exporter needs no onnxscript
    )
    (folder / SPEC_FILENAME).write_text(effnet_spec(path.name, EFFNET_SIZE).to_json())
    return folder


def effnet_folder(arg: Path, tmp: Path) -> Path:
    """A loadable folder for ``--effnet``: as given, or a lone ONNX file with a default spec."""
    if arg.is_dir():
        return arg
    folder = tmp / "effnet"
    folder.mkdir()
    (folder / arg.name).symlink_to(arg.resolve())
    try:
        LivenessSpec.load(folder)  # self-describing (ONNX metadata): keep its own spec
    except ModelLoadError:
        (folder / SPEC_FILENAME).write_text(effnet_spec(arg.name, EFFNET_SIZE).to_json())
    return folder


def load_faces() -> list[Item]:
    """Real photos of ../shared/faces with the largest SCRFD face box of each."""
    pack = FacePack.load(FACE_PACK, det_size=640, det_thresh=0.5)
    items: list[Item] = []
    for path in sorted((SHARED / "faces").rglob("*")):
        if path.suffix.lower() not in {".jpg", ".jpeg", ".png"}:
            continue
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        pixels = np.asarray(image, dtype=np.uint8)
        faces = pack.detect(pixels)  # largest box first
        if faces:
            items.append((pixels, list(faces[0].bbox)))
    return items


def timed(fn: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench_model(folder: Path, items: list[Item], runs: int) -> dict[str, Any]:
    start = time.perf_counter()
    scorer = LivenessScorer.load(folder)
    row: dict[str, Any] = {
        "model": scorer.name,
        "version": scorer.version,
        "members": list(scorer.member_files),
        "providers": scorer.providers,
        "load_s": round(time.perf_counter() - start, 3),
    }
    one = items[:1]
    latencies = timed(lambda: scorer.score_many(one), runs)
    row["batch1_median_ms"] = round(statistics.median(latencies) * 1e3, 3)
    row["batch1_p90_ms"] = round(float(np.percentile(latencies, 90)) * 1e3, 3)
    # The minimum is the uncontended cost; median and p90 show what a busy host adds.
    row["batch1_min_ms"] = round(min(latencies) * 1e3, 3)
    prepared = scorer.model_inputs(one)
    model_only = timed(lambda: scorer.run_model(prepared), runs)
    row["batch1_model_only_median_ms"] = round(statistics.median(model_only) * 1e3, 3)

    for size in BATCHES:
        batch = [items[i % len(items)] for i in range(size)]
        times = timed(functools.partial(scorer.score_many, batch), max(5, runs // 4))
        row[f"batch{size}_faces_per_s"] = round(size / statistics.median(times), 1)
        row[f"batch{size}_ms_per_face"] = round(statistics.median(times) / size * 1e3, 3)
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = [
        ("model", "model"),
        ("providers", "providers"),
        ("batch1_median_ms", "b1 median ms"),
        ("batch1_p90_ms", "b1 p90 ms"),
        ("batch1_min_ms", "b1 min ms"),
        ("batch1_model_only_median_ms", "b1 model-only ms"),
        *[(f"batch{b}_faces_per_s", f"b{b} faces/s") for b in BATCHES],
        *[(f"batch{b}_ms_per_face", f"b{b} ms/face") for b in BATCHES],
        ("load_s", "load s"),
    ]
    cells = [[",".join(r[k]) if k == "providers" else str(r[k]) for k, _ in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(columns)]
    print(" | ".join(h.ljust(w) for (_, h), w in zip(columns, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for c in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description="liveness scoring speed")
    parser.add_argument("--runs", type=int, default=50, help="timed runs at batch 1")
    parser.add_argument("--effnet", type=Path, help="EfficientNet-B2 liveness folder or ONNX file")
    parser.add_argument("--no-effnet", action="store_true", help="skip the EfficientNet-B2 row")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "faceauth_bench_liveness.json",
        help="where to write the JSON results",
    )
    args = parser.parse_args()

    items = load_faces()
    rows = [bench_model(MINIFASNET, items, args.runs)]
    with tempfile.TemporaryDirectory() as tmp_dir:
        folder: Path | None = None
        if args.effnet is not None:
            folder = effnet_folder(args.effnet, Path(tmp_dir))
        elif not args.no_effnet:
            folder = export_random_effnet(Path(tmp_dir))
        if folder is not None:
            rows.append(bench_model(folder, items, args.runs))

    threads = get_settings().ort_intra_op_threads
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "onnxruntime": ort.__version__,
            "ort_intra_op_threads": threads or "ORT default",
        },
        "faces": len(items),
        "runs": args.runs,
        "results": rows,
    }
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nresults written to {args.out}")


if __name__ == "__main__":
    main()
