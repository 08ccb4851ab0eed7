"""The GPU-host path on the CPU: crop bundle from real photos, quick training, stage check.

``prepare_bundle`` runs the job's MediaPipe crop cache on photos from ../shared/faces;
``train_on_gpu_host --quick`` trains one CPU epoch on the bundle, exports ONNX and scores
the test faces through the workers' liveness stage, and, with pydantic made unimportable
as on the GPU host, through the stage's standalone twin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.training

for _module in ("torch", "timm", "mediapipe", "onnxruntime"):
    pytest.importorskip(_module, reason=f"{_module} not importable: install the 'training' extra")

import cv2  # noqa: E402

from shared.face_crop import crop_face  # noqa: E402
from shared.liveness_spec import LivenessSpec  # noqa: E402
from training.gpu import prepare_bundle  # noqa: E402
from training.gpu.bundle import read_bundle  # noqa: E402
from training.gpu.stage_check import host_spec, serving_boxes  # noqa: E402
from training.liveness.data import assign_splits, scan_folder  # noqa: E402
from training.liveness.export import build_spec  # noqa: E402
from training.liveness.preprocess import CropParams, preprocess  # noqa: E402

INPUT_SIZE = 64
CROP_SCALE = 1.6
REPO = Path(__file__).resolve().parents[1]


def _reshot(image_bgr: np.ndarray) -> np.ndarray:
    """A photo re-shot off a screen: softened, striped, colder."""
    h, w = image_bgr.shape[:2]
    small = cv2.resize(image_bgr, (max(w // 4, 8), max(h // 4, 8)), interpolation=cv2.INTER_AREA)
    soft = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    soft[::4] *= 0.8
    soft += np.array([20.0, 0.0, -10.0], dtype=np.float32)
    return np.clip(soft, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, faces: Path) -> Path:
    """faces/pad's flat layout (live/, print/, replay/) plus live identities and re-shots."""
    root = tmp_path_factory.mktemp("pad_data")
    for kind in ("live", "print", "replay"):
        shutil.copytree(faces / "pad" / kind, root / kind)
    (root / "screen").mkdir()
    for i, src in enumerate(sorted((faces / "identities").glob("*/*"))):
        shutil.copy(src, root / "live" / f"{i:02d}_{src.name}")
        pixels = cv2.imread(str(src), cv2.IMREAD_COLOR)
        assert pixels is not None, src
        cv2.imwrite(str(root / "screen" / f"{i:02d}_{src.stem}.png"), _reshot(pixels))
    return root


def _prepare(dataset: Path, work: Path, *pack_args: str) -> Path:
    argv = [
        str(dataset),
        "--out",
        str(work / "bundle"),
        "--cache-dir",
        str(work.parent / "cache"),  # shared: MediaPipe runs once for both bundles
        "--input-size",
        str(INPUT_SIZE),
        "--crop-scale",
        str(CROP_SCALE),
        "--val-fraction",
        "0.25",
        "--test-fraction",
        "0.25",
        *pack_args,
    ]
    assert prepare_bundle.main(argv) == 0
    return work / "bundle"


@pytest.fixture(scope="module")
def bundle_dir(dataset: Path, tmp_path_factory: pytest.TempPathFactory, assets: Path) -> Path:
    """Calibrated: the workers' test face pack measured the serving crop."""
    pack = assets / "models" / "facepack-test"
    work = tmp_path_factory.mktemp("bundles") / "calibrated"
    return _prepare(dataset, work, "--serving-face-pack", str(pack))


@pytest.fixture(scope="module")
def plain_bundle_dir(dataset: Path, bundle_dir: Path) -> Path:
    """Uncalibrated: no face pack, the exported crop is the training crop."""
    return _prepare(dataset, bundle_dir.parent.parent / "plain", "--no-serving-face-pack")


def test_bundle_holds_augmentation_ready_crops_of_every_usable_face(
    bundle_dir: Path, dataset: Path
) -> None:
    bundle = read_bundle(bundle_dir)
    samples = assign_splits(scan_folder(dataset), 0.25, 0.25)
    assert len(bundle.labels) == bundle.meta["counts"]["usable"] == len(samples) == 27
    assert bundle.size == round(INPUT_SIZE * prepare_bundle.DEFAULT_MARGIN) > INPUT_SIZE
    assert sorted(set(bundle.attack_types)) == ["live", "print", "replay", "screen"]
    assert {int(v) for v in bundle.splits} == {0, 1, 2}
    # Cutting the model crop out of a bundle crop shows what the job's own crop shows.
    job = preprocess(
        samples,
        CropParams(CROP_SCALE, INPUT_SIZE, "auto", 0.5),
        bundle_dir.parent / "job_cache",
        progress=False,
    )

    def smooth(image: np.ndarray) -> np.ndarray:
        # Both sides downscale large photos without anti-aliasing, the bundle twice: compare
        # the picture, not the aliasing.
        return cv2.GaussianBlur(image, (7, 7), 2.0).astype(np.float32)

    job_crops = [smooth(cv2.imread(str(c.crop_path))) for c in job.usable]
    diffs = []
    for i in range(len(bundle.labels)):
        box = [float(v) for v in bundle.boxes[i]]
        mine = smooth(crop_face(bundle.crops[i], box, CROP_SCALE, (INPUT_SIZE,) * 2, square=True))
        # The bundle holds no paths: its twin is the closest job crop.
        diffs.append(min(float(np.abs(mine - theirs).mean()) for theirs in job_crops))
    # Aliasing of photos downscaled ~9x to 64 px leaves a few levels; a wrong window is ~30.
    assert max(diffs) < 6.0, diffs
    assert (bundle_dir / "crops.npz").stat().st_size < 4 * 2**20


@pytest.mark.parametrize(
    "box",
    [(120.0, 110.0, 200.0, 196.0), (4.0, 150.0, 84.0, 236.0), (200.0, 2.0, 296.0, 90.0)],
    ids=["centre", "left-edge", "top-right-corner"],
)
def test_model_crop_cut_from_a_bundle_crop_is_the_direct_crop(
    box: tuple[float, float, float, float],
) -> None:
    """Geometry of ``box_in_crop`` on a smooth image (no aliasing to blur the comparison)."""
    yy, xx = np.mgrid[0:320, 0:300].astype(np.float32)
    image = np.stack(
        [127 + 100 * np.sin(xx / 23.0), 127 + 100 * np.cos(yy / 17.0), (xx + yy) / 2.5], axis=-1
    ).astype(np.uint8)
    size, prep_scale = prepare_bundle.prep_geometry(128, CROP_SCALE, prepare_bundle.DEFAULT_MARGIN)
    wide = crop_face(image, box, prep_scale, (size, size), square=True)
    in_crop = prepare_bundle.box_in_crop(box, (300, 320), prep_scale, size)
    mine = crop_face(wide, in_crop, CROP_SCALE, (128, 128), square=True)
    direct = crop_face(image, box, CROP_SCALE, (128, 128), square=True)
    assert float(np.abs(mine.astype(np.float32) - direct).mean()) < 2.0


def test_augmentation_without_jitter_is_the_serving_crop(
    bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from training.gpu import augment
    from training.gpu.train_on_gpu_host import eval_set

    bundle = read_bundle(bundle_dir)
    test = eval_set(bundle, "test")
    index = torch.as_tensor(test.index)
    jittered = augment.Augmenter(bundle, torch.device("cpu"))
    a = jittered(index, torch.Generator().manual_seed(1))
    b = jittered(index, torch.Generator().manual_seed(2))
    assert a.shape == test.inputs.shape and not torch.equal(a, b)

    monkeypatch.setattr(augment, "SCALE_JITTER", 0.0)
    monkeypatch.setattr(augment, "SHIFT_JITTER", 0.0)
    still = augment.Augmenter(bundle, torch.device("cpu"))(index, torch.Generator().manual_seed(1))
    # Per face, the closer of the crop and its mirror image (flips stay random).
    diff = torch.minimum(
        (still - test.inputs).abs().mean(dim=(1, 2, 3)),
        (still - test.inputs.flip(-1)).abs().mean(dim=(1, 2, 3)),
    )
    # Resampling differences only (~0.05); a window 15 % too large measures 0.3 and more.
    assert float(diff.max()) < 0.2, diff


def _host_run(bundle_dir: Path, out: Path, *extra: str, block_pydantic: bool) -> dict:
    """Run the host script in a fresh interpreter, optionally without pydantic (as there)."""
    blocker = (
        "import sys\n"
        "for m in ('pydantic', 'pydantic_core', 'pydantic_settings', 'mediapipe'):\n"
        "    sys.modules[m] = None\n"
        if block_pydantic
        else "import sys\n"
    )
    code = (
        blocker + "from training.gpu.train_on_gpu_host import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    argv = ["--bundle", str(bundle_dir), "--out", str(out), "--quick", "--version", "q1", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report: dict = json.loads((out / "report.json").read_text())
    return report


def test_quick_host_run_without_pydantic_checks_the_stage_contract(
    bundle_dir: Path, tmp_path: Path
) -> None:
    report = _host_run(bundle_dir, tmp_path / "run", "--check", "auto", block_pydantic=True)
    assert report["device"] == "cpu" and report["precision"] == "fp32"
    assert report["epochs_run"] == 1 and report["best_epoch"] == 1
    check = report["stage_check"]
    assert check["mode"] == "standalone" and check["faces"] > 0
    assert check["max_score_diff"] < 1e-4 and check["max_input_diff_to_eval"] < 0.2
    assert report["ort_vs_torch_max_softmax_diff"] < 1e-4
    assert set(report["timings"]) >= {"load_s", "train_s", "export_s", "stage_check_s"}

    # What the host wrote is a model folder the workers load and score with.
    from workers.inference.liveness import LivenessScorer

    folder = Path(report["model_folder"])
    spec = LivenessSpec.load(folder)
    assert spec.version == "q1" and spec.members[0].input_width == INPUT_SIZE
    # The serving crop measured against SCRFD while preparing, not the training crop.
    measured = read_bundle(bundle_dir).meta["serving_crop"]
    assert spec.members[0].crop_scale == measured["crop_scale"] < CROP_SCALE
    assert list(spec.members[0].crop_shift) == measured["crop_shift"] != [0.0, 0.0]
    calibration = spec.training["box_calibration"]
    assert (
        calibration["n_faces"] > 0 and calibration["serving_crop_scale"] == measured["crop_scale"]
    )
    scorer = LivenessScorer.load(folder, providers=["CPUExecutionProvider"])
    bundle = read_bundle(bundle_dir)
    faces = [(bundle.crops[i], [float(v) for v in bundle.boxes[i]]) for i in range(4)]
    assert all(0.0 <= s.spoof_score <= 1.0 for s in scorer.score_many(faces))


def test_quick_host_run_through_the_worker_stage(bundle_dir: Path, tmp_path: Path) -> None:
    report = _host_run(bundle_dir, tmp_path / "run", "--check", "worker", block_pydantic=False)
    check = report["stage_check"]
    assert check["mode"] == "worker" and "LivenessScorer (q1+" in check["stage"]
    assert check["max_score_diff"] < 1e-4 and check["max_input_diff_to_eval"] < 0.2


def test_host_run_stops_at_its_time_budget(plain_bundle_dir: Path, tmp_path: Path) -> None:
    from training.gpu.train_on_gpu_host import main

    out = tmp_path / "run"
    argv = ["--bundle", str(plain_bundle_dir), "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--epochs", "3", "--budget-s", "1", "--max-steps-per-epoch", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["stopped_for_budget"] and report["epochs_run"] == 1
    # Uncalibrated: the training crop is exported and the stage cuts exactly the eval crop.
    assert read_bundle(plain_bundle_dir).meta["serving_crop"]["box_calibration"] is None
    spec = LivenessSpec.load(Path(report["model_folder"]))
    assert (spec.members[0].crop_scale, spec.members[0].crop_shift) == (CROP_SCALE, (0.0, 0.0))
    assert report["stage_check"]["max_input_diff_to_eval"] == 0.0


@pytest.mark.parametrize("shift", [(0.0, 0.0), (0.012, 0.104)])
def test_serving_boxes_cropped_as_exported_show_the_training_crop(
    shift: tuple[float, float],
) -> None:
    yy, xx = np.mgrid[0:320, 0:300].astype(np.float32)
    image = np.stack(
        [127 + 100 * np.sin(xx / 23.0), 127 + 100 * np.cos(yy / 17.0), (xx + yy) / 2.5], axis=-1
    ).astype(np.uint8)
    train_box = (110.0, 100.0, 190.0, 196.0)
    serving_scale = CROP_SCALE / 1.25  # SCRFD's box ~1.25x MediaPipe's
    (box,) = serving_boxes([train_box], serving_scale, shift, CROP_SCALE)
    assert box[2] - box[0] == pytest.approx(96.0 * 1.25)
    served = crop_face(image, box, serving_scale, (128, 128), square=True, shift=shift)
    trained = crop_face(image, train_box, CROP_SCALE, (128, 128), square=True)
    assert float(np.abs(served.astype(np.float32) - trained).mean()) < 2.0


def test_host_spec_is_the_jobs_spec() -> None:
    common = {
        "name": "m",
        "version": "v",
        "input_size": 260,
        "crop_scale": 1.6,
        "threshold": 0.5,
        "training": {"a": [1, 2]},
        "metrics": {"auc": 0.9},
    }
    job = build_spec(onnx_file="liveness_efficientnet_b2.onnx", **common)  # type: ignore[arg-type]
    assert host_spec(**common) == json.loads(job.to_json())  # type: ignore[arg-type]
    shifted = {**common, "crop_scale": 1.28, "crop_shift": (0.012, 0.104)}
    job = build_spec(onnx_file="liveness_efficientnet_b2.onnx", **shifted)  # type: ignore[arg-type]
    assert host_spec(**shifted) == json.loads(job.to_json())  # type: ignore[arg-type]
