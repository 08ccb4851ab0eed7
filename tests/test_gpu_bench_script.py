"""The GPU benchmark's model conversion, checked on CPU.

``tests/bench/gpu/bench_face_models_gpu.py`` opens the batch dimension of the test pack's
SCRFD and MobileFaceNet graphs (fixed at batch 1) and converts them to PyTorch with
onnx2torch, to time them on a GPU host without onnxruntime-gpu. Its figures mean
something only if the batched graphs give each image the outputs of one-by-one runs of
the original graph, and if the converted models agree with onnxruntime: this runs the
script's own checks (``--quick --cpu-only``, in a subprocess as on the GPU host) and reads
them back from its JSON.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.training, pytest.mark.slow]

for _module in ("torch", "onnx2torch"):
    if importlib.util.find_spec(_module) is None:
        pytest.skip(
            f"{_module} not importable: install the 'training' and 'dev' extras",
            allow_module_level=True,
        )

SCRIPT = Path(__file__).resolve().parent / "bench" / "gpu" / "bench_face_models_gpu.py"
TOL = 1e-3  # the script's TOL_FP32, on raw outputs
GROUPS = {"detection": ("scores", "boxes", "landmarks"), "recognition": ("embedding",)}


@pytest.fixture(scope="module")
def result(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gpu-bench") / "result.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--cpu-only",
            "--models",
            str(assets / "models" / "facepack-test"),
            "--faces",
            str(assets / "faces" / "identities"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc: dict[str, Any] = json.loads(out.read_text())
    doc["_png"] = out.with_suffix(".png").is_file()
    return doc


def test_writes_the_expected_document(result: dict[str, Any]) -> None:
    for key in (
        "machine",
        "load_average_1_5_15",
        "settings",
        "inputs",
        "models",
        "checks",
        "throughput",
        "flattening",
        "not_measured",
    ):
        assert key in result, key
    assert result["bench"] == "bench_face_models_gpu"
    assert result["gpu_measured"] is False
    assert result["gpu_skipped_because"] == "--cpu-only"
    assert result["checks_ok"] is True
    assert result["_png"], "no figure beside the JSON"
    measured = {(r["model"], r["runtime"], r["batch"]) for r in result["throughput"]}
    for model in GROUPS:
        for runtime in ("onnxruntime", "torch+onnx2torch"):
            assert {(model, runtime, 1), (model, runtime, 8)} <= measured
    assert all(r["images_per_s"] > 0 for r in result["throughput"])
    assert set(result["flattening"]) == {
        f"{m} cpu {rt} fp32" for m in GROUPS for rt in ("onnxruntime", "torch+onnx2torch")
    }


def test_batch_dimension_was_opened(result: dict[str, Any]) -> None:
    det = result["models"]["detection"]
    assert det["input"]["input.1"][0] == 1  # the original graph really is batch 1
    edits = " | ".join(det["batch_opening"])
    # SCRFD's heads: the batch must stay first through the transpose, then be kept by reshape.
    assert "perm [2, 3, 0, 1] -> [0, 2, 3, 1]" in edits
    assert "[-1, 4] -> [0, -1, 4]" in edits
    rec = result["models"]["recognition"]
    assert rec["input"]["input"][0] == 1
    assert "[1, -1] -> [0, -1]" in " | ".join(rec["batch_opening"])


@pytest.mark.parametrize("model", sorted(GROUPS))
def test_batched_outputs_equal_single_outputs(result: dict[str, Any], model: str) -> None:
    checks = result["checks"][model]
    assert checks["images"] >= 4
    for key in (
        "ort_batched_vs_single",
        "torch_cpu_fp32_batched_vs_ort_single",
        "torch_cpu_fp32_single_vs_ort_single",
    ):
        assert checks[key]["ok"], (key, checks[key])
        for group in GROUPS[model]:
            assert checks[key][group]["max_abs_diff"] <= TOL, (key, group, checks[key][group])
    half = checks["torch_cpu_fp16_batched_vs_ort_single"]
    assert half["ok"], half
    if model == "recognition" and "skipped" not in half:
        assert half["embedding"]["min_cosine"] >= 0.999


@pytest.mark.parametrize("model", sorted(GROUPS))
def test_gpu_placement_dry_run(result: dict[str, Any], model: str) -> None:
    """Weights on the meta device, shape arithmetic on CPU: what the CUDA run will do."""
    dry = result["checks"][model]["device_dry_run"]
    assert dry["ok"], dry
    n = result["checks"][model]["images"]
    assert all(shape[0] == n for shape in dry["fp32"] + dry["fp16"])


def test_aligned_faces_still_recognise_people(result: dict[str, Any]) -> None:
    """The script's own decode + alignment feeds the recognizer real faces."""
    cos = result["sanity"]["cosine_onnxruntime"]
    assert cos["genuine_min"] > cos["impostor_max"] + 0.2
    assert min(result["sanity"]["top_face_scores"]) > 0.5
