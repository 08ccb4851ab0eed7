"""The liveness training job, end to end on a tiny dataset built from ../shared/faces.

A real (tiny) training run: MediaPipe detection, cached crops, EfficientNet-B2 at 64x64 for
two short epochs on CPU, evaluation, ONNX export and the ORT-vs-torch check. The metric
functions and early stopping are also checked against hand-computed numbers.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.training

for _module in ("torch", "timm", "mediapipe"):
    pytest.importorskip(_module, reason=f"{_module} not importable: install the 'training' extra")

import cv2  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from shared.face_crop import crop_face, scaled_box  # noqa: E402
from shared.liveness_spec import ONNX_METADATA_KEY, LivenessMember, LivenessSpec  # noqa: E402
from training.liveness.calibration import (  # noqa: E402
    BoxMatch,
    FacePackBoxDetector,
    calibrate,
    iou,
    match_box,
    serving_crop,
)
from training.liveness.config import TrainConfig, TrainResult  # noqa: E402
from training.liveness.data import (  # noqa: E402
    LIVE,
    SPOOF,
    assign_splits,
    read_manifest,
    scan_folder,
)
from training.liveness.evaluate import (  # noqa: E402
    bpcer_at_apcer,
    evaluate_scores,
    pad_metrics,
    roc_auc,
)
from training.liveness.model import (  # noqa: E402
    build_model,
    load_backbone_weights,
    load_checkpoint,
    normalise_bgr_batch,
)
from training.liveness.preprocess import (  # noqa: E402
    REASON_FACE_CUT_OFF,
    REASON_NO_FACE,
    REASON_UNREADABLE,
    CropParams,
    Detection,
    MediaPipeFaceDetector,
    choose_face,
    preprocess,
)
from training.liveness.train import EarlyStopping, train_liveness  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INPUT_SIZE = 64


# --- a tiny dataset ---------------------------------------------------------------------------


def _screen_replay(image_bgr: np.ndarray) -> np.ndarray:
    """A photo as if re-shot off a screen: lost detail, blur, moire bands and a blue cast."""
    h, w = image_bgr.shape[:2]
    small = cv2.resize(image_bgr, (max(w // 4, 8), max(h // 4, 8)), interpolation=cv2.INTER_AREA)
    soft = cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), (5, 5), 0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    moire = 18.0 * np.sin(0.9 * xx + 0.35 * yy) * np.sin(0.05 * yy)
    screen = soft.astype(np.float32) * 0.85 + moire[..., None]
    screen += np.array([22.0, 4.0, -10.0], dtype=np.float32)  # BGR: screens render cold
    return np.clip(screen, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, faces: Path) -> Path:
    """live = identities + pad/live; spoof = pad/print, pad/replay and screen re-shots."""
    root = tmp_path_factory.mktemp("liveness_data")
    live = sorted((faces / "identities").glob("*/*")) + sorted((faces / "pad" / "live").glob("*"))
    for sub in ("live", "spoof/print", "spoof/replay", "spoof/screen"):
        (root / sub).mkdir(parents=True)
    for i, src in enumerate(live):
        shutil.copy(src, root / "live" / f"{i:02d}_{src.name}")
        pixels = cv2.imread(str(src), cv2.IMREAD_COLOR)
        assert pixels is not None, src
        cv2.imwrite(
            str(root / "spoof" / "screen" / f"{i:02d}_{src.stem}.png"), _screen_replay(pixels)
        )
    for kind in ("print", "replay"):
        for src in sorted((faces / "pad" / kind).glob("*")):
            shutil.copy(src, root / "spoof" / kind / src.name)
    # Three images that must be reported, not dropped: no face, a cut-off face, garbage bytes.
    cv2.imwrite(str(root / "live" / "blank.png"), np.full((240, 320, 3), 127, np.uint8))
    shutil.copy(faces / "edge" / "obama_partial_face.jpg", root / "live" / "partial.jpg")
    (root / "spoof" / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg \xff\xd9")
    return root


@pytest.fixture(scope="module")
def serving_pack(assets: Path) -> Path:
    return assets / "models" / "facepack-test"


@pytest.fixture(scope="module")
def run(
    dataset: Path, serving_pack: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainConfig, TrainResult]:
    config = TrainConfig(
        out_dir=tmp_path_factory.mktemp("liveness_run"),
        data_dir=dataset,
        epochs=2,
        batch_size=4,
        input_size=INPUT_SIZE,
        patience=3,
        max_steps_per_epoch=2,
        val_fraction=0.25,
        test_fraction=0.25,
        device="cpu",
        version="test-run",
        serving_face_pack=serving_pack,
    )
    return config, train_liveness(config)


# --- the training run -------------------------------------------------------------------------


def test_run_reports_unusable_images(run: tuple[TrainConfig, TrainResult]) -> None:
    _, result = run
    report = json.loads(result.preprocess_report_path.read_text())
    reasons = {Path(row["path"]).name: row["reason"] for row in report["unusable"]}
    assert reasons == {
        "blank.png": REASON_NO_FACE,
        "partial.jpg": REASON_FACE_CUT_OFF,
        "corrupt.jpg": REASON_UNREADABLE,
    }
    assert report["n_unusable"] == 3
    assert report["n_usable"] == report["n_images"] - 3 == 28
    with result.preprocess_report_path.with_suffix(".csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {Path(r["path"]).name: r["reason"] for r in rows} == reasons
    assert result.counts["n_unusable"] == 3


class _CachedServingOnly:
    """The run's serving detector identity, but detecting is a test failure."""

    def __init__(self, real: FacePackBoxDetector) -> None:
        self.version, self.cache_tag = real.version, real.cache_tag

    def boxes(self, image_bgr: np.ndarray) -> list[tuple[float, float, float, float]]:
        raise AssertionError("a cached serving box was measured again")


def test_crop_cache_is_hit_on_second_run(
    run: tuple[TrainConfig, TrainResult], dataset: Path, serving_pack: Path
) -> None:
    config, result = run
    samples = assign_splits(scan_folder(dataset), 0.25, 0.25)
    params = CropParams(
        config.crop_scale, config.input_size, config.detector, config.min_detection_confidence
    )

    def must_not_detect(image: np.ndarray) -> list[Detection]:
        raise AssertionError("a cached image was detected again")

    serving = _CachedServingOnly(FacePackBoxDetector.load(serving_pack))
    again = preprocess(
        samples,
        params,
        config.resolved_cache_dir,
        must_not_detect,
        serving=serving,
        progress=False,
    )
    hashed = [s for s in samples if s.content_hash is not None]
    assert again.cache_hits == len(hashed) == len(samples)
    assert again.cache_misses == 0
    assert len(again.usable) == 28 and len(again.unusable) == 3
    # Every usable face's serving box comes from the cache and gives the run's calibration.
    assert (again.box_cache_hits, again.box_cache_misses) == (28, 0)
    assert len(again.box_matches) + again.box_unmatched == 28
    recorded = LivenessSpec.load(result.onnx_path.parent).training["box_calibration"]
    assert len(again.box_matches) == recorded["n_faces"]
    assert again.box_unmatched == recorded["n_unmatched"]
    crop = cv2.imread(str(again.usable[0].crop_path), cv2.IMREAD_COLOR)
    assert crop is not None and crop.shape == (INPUT_SIZE, INPUT_SIZE, 3)
    # A different crop parameter must not reuse those crops.
    other = CropParams(2.0, config.input_size, config.detector, config.min_detection_confidence)
    calls: list[int] = []

    def counting(image: np.ndarray) -> list[Detection]:
        calls.append(1)
        return []

    missed = preprocess(samples[:2], other, config.resolved_cache_dir, counting, progress=False)
    assert missed.cache_misses == 2 and len(calls) == 2


def test_epoch_log_and_best_checkpoint(run: tuple[TrainConfig, TrainResult]) -> None:
    _, result = run
    log = json.loads(result.epoch_log_path.read_text())
    assert [e["epoch"] for e in log] == list(range(1, result.epochs_run + 1))
    assert result.epochs_run == 2
    for entry in log:
        assert math.isfinite(entry["val_loss"]) and math.isfinite(entry["train_loss"])
        assert entry["steps"] == 2
    best = min(log, key=lambda e: e["val_loss"])
    assert result.best_epoch == best["epoch"] == log[-1]["best_epoch"]
    assert result.checkpoint_path.is_file()
    assert not result.stopped_early


def test_resuming_a_finished_run_trains_no_further(run: tuple[TrainConfig, TrainResult]) -> None:
    config, result = run
    state = config.out_dir / "checkpoints" / "last.pt"
    assert state.is_file() and result.resumed_from == 0 and result.precision == "fp32"
    before = json.loads(result.epoch_log_path.read_text())
    again = train_liveness(replace(config, resume=True))
    assert again.resumed_from == 2 and again.epochs_run == 2
    assert again.best_epoch == result.best_epoch
    assert json.loads(again.epoch_log_path.read_text()) == before
    assert again.onnx_path.read_bytes() == result.onnx_path.read_bytes()


def test_eda_report(run: tuple[TrainConfig, TrainResult]) -> None:
    _, result = run
    eda = json.loads(result.eda_report_path.read_text())
    per_split = eda["usable"]
    assert sum(sum(s["class"].values()) for s in per_split.values()) == 28
    assert sum(per_split[s]["class"]["spoof"] for s in per_split) == 15
    attack_totals: dict[str, int] = {}
    for split in per_split.values():
        for name, n in split["attack_type"].items():
            attack_totals[name] = attack_totals.get(name, 0) + n
    assert attack_totals == {"live": 13, "print": 1, "replay": 1, "screen": 13}
    assert sum(eda["unusable"].values()) == 3
    assert (result.out_dir / "eda.png").read_bytes().startswith(PNG_SIGNATURE)


def test_evaluation_has_every_metric(run: tuple[TrainConfig, TrainResult]) -> None:
    _, result = run
    evaluation = json.loads(result.evaluation_path.read_text())
    metrics = evaluation[evaluation["evaluated_on"]]
    for key in ("loss", "accuracy", "spoof_recall", "spoof_precision", "f1", "roc_auc"):
        assert key in metrics
    assert 0.0 <= metrics["accuracy"] <= 1.0 and math.isfinite(metrics["loss"])
    iso = metrics["iso_30107_3"]
    for key in ("apcer", "apcer_max", "worst_attack_type", "bpcer", "acer"):
        assert key in iso
    assert set(iso["apcer"]) <= {"print", "replay", "screen"} and iso["apcer"]
    if iso["bpcer"] is not None:
        assert iso["acer"] == pytest.approx((iso["apcer_max"] + iso["bpcer"]) / 2)
    for target in ("apcer_5pct", "apcer_1pct"):
        entry = iso["bpcer_at_apcer"][target]
        assert entry["supported"] is False  # a handful of attacks cannot resolve 5% or 1%
        assert entry["reason"].startswith("not supported")


def test_plots_are_valid_pngs(run: tuple[TrainConfig, TrainResult]) -> None:
    _, result = run
    for name in ("roc.png", "score_histogram.png", "eda.png"):
        data = (result.out_dir / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100


def test_exported_model_folder(run: tuple[TrainConfig, TrainResult], tmp_path: Path) -> None:
    config, result = run
    folder = result.onnx_path.parent
    assert sorted(p.name for p in folder.iterdir()) == sorted([config.onnx_file, "liveness.json"])
    spec = LivenessSpec.load(folder)
    member = spec.members[0]
    assert (spec.name, spec.version, spec.default_threshold) == (
        config.model_name,
        "test-run",
        0.5,
    )
    assert (member.input_width, member.input_height) == (INPUT_SIZE, INPUT_SIZE)
    assert member.color_order == "RGB" and member.live_class_index == 0
    assert member.square is True  # crop_scale: see test_export_calibrates_the_serving_crop
    assert member.pixel_scale == pytest.approx(1 / 255)
    assert member.mean == pytest.approx((0.485, 0.456, 0.406))
    assert spec.training["data"]["n_unusable"] == 3
    assert "accuracy" in spec.metrics and "iso_30107_3" in spec.metrics

    proto = onnx.load(str(result.onnx_path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[ONNX_METADATA_KEY]) == json.loads(result.spec_path.read_text())
    assert any(op.version == 17 for op in proto.opset_import if op.domain in ("", "ai.onnx"))
    # A lone ONNX file describes itself.
    shutil.copy(result.onnx_path, tmp_path / "renamed.onnx")
    assert LivenessSpec.load(tmp_path).members[0].file == "renamed.onnx"


def test_onnx_matches_torch_on_real_crops(run: tuple[TrainConfig, TrainResult]) -> None:
    config, result = run
    crops = sorted(config.resolved_cache_dir.rglob("*.png"))[:5]  # 5: not the export batch size
    batch = normalise_bgr_batch(np.stack([cv2.imread(str(p), cv2.IMREAD_COLOR) for p in crops]))
    model = build_model(config.dropout)
    load_checkpoint(model, result.checkpoint_path)
    model.eval()
    with torch.no_grad():
        torch_prob = torch.softmax(model(torch.from_numpy(batch)), dim=1).numpy()
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: batch})[0]
    ort_prob = np.exp(logits - logits.max(1, keepdims=True))
    ort_prob /= ort_prob.sum(1, keepdims=True)
    assert ort_prob.shape == (5, 2)
    assert np.abs(ort_prob - torch_prob).max() < 1e-4
    assert result.metrics["max_softmax_diff"] < 1e-4


# --- units --------------------------------------------------------------------------------------


def test_early_stopping_on_a_fake_loss_sequence() -> None:
    stopper = EarlyStopping(patience=3)
    losses = [1.0, 0.8, 0.85, 0.9, 0.7, 0.75, 0.76, 0.77, 0.5]
    improved, stopped_at = [], None
    for epoch, loss in enumerate(losses, start=1):
        improved.append(stopper.step(epoch, loss))
        if stopper.should_stop:
            stopped_at = epoch
            break
    assert improved == [True, True, False, False, True, False, False, False]
    assert stopped_at == 8
    assert (stopper.best_epoch, stopper.best_loss) == (5, 0.7)

    strict = EarlyStopping(patience=1, min_delta=0.1)
    assert strict.step(1, 1.0) is True
    assert strict.step(2, 0.95) is False  # better, but by less than min_delta
    assert strict.should_stop and strict.best_epoch == 1


def test_apcer_bpcer_acer_by_hand() -> None:
    # bona fide: one of four at/above 0.5 -> BPCER 1/4.
    # print: 0.4 of [0.9, 0.8, 0.4] slips through -> APCER 1/3; replay: none -> 0.
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.6, 0.9, 0.8, 0.4, 0.7, 0.55]
    types = ["live"] * 4 + ["print"] * 3 + ["replay"] * 2
    pad = pad_metrics(labels, scores, types, 0.5)
    assert pad["apcer"] == pytest.approx({"print": 1 / 3, "replay": 0.0})
    assert pad["apcer_max"] == pytest.approx(1 / 3) and pad["worst_attack_type"] == "print"
    assert pad["bpcer"] == pytest.approx(0.25)
    assert pad["acer"] == pytest.approx((1 / 3 + 1 / 4) / 2)
    full = evaluate_scores(labels, scores, types, 0.5, loss=0.3)
    # tp = 4 (0.9, 0.8, 0.7, 0.55), fp = 1 (0.6), fn = 1 (0.4), tn = 3
    assert full["accuracy"] == pytest.approx(7 / 9)
    assert full["spoof_recall"] == pytest.approx(4 / 5)
    assert full["spoof_precision"] == pytest.approx(4 / 5)
    assert full["f1"] == pytest.approx(4 / 5)
    # AUC: of 20 (spoof, live) pairs, (0.4, 0.6) and (0.55, 0.6) are mis-ordered -> 18/20.
    assert full["roc_auc"] == pytest.approx(18 / 20)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([1, 1], [0.2, 0.9]) is None


def test_bpcer_at_fixed_apcer_by_hand() -> None:
    attack = [i / 20 for i in range(1, 21)]  # 0.05 .. 1.00, twenty of one attack type
    bona_fide = [0.0, 0.02, 0.08, 0.12, 0.5]
    labels = [1] * 20 + [0] * 5
    types = ["print"] * 20 + ["live"] * 5
    at5 = bpcer_at_apcer(labels, attack + bona_fide, types, 0.05)
    # One miss of 20 allowed: threshold at the 2nd lowest attack score, 0.10; the bona fide
    # 0.12 and 0.5 are then called attacks -> BPCER 2/5.
    assert at5["supported"] is True
    assert at5["threshold"] == pytest.approx(0.10)
    assert at5["apcer_max"] == pytest.approx(0.05)
    assert at5["bpcer"] == pytest.approx(0.4)
    at1 = bpcer_at_apcer(labels, attack + bona_fide, types, 0.01)
    assert at1["supported"] is False and "100" in at1["reason"]


def test_folder_scan_manifest_and_subject_split(tmp_path: Path) -> None:
    for rel in ("live/a.jpg", "live/p1/b.png", "spoof/c.jpg", "spoof/mask/d.jpg", "spoof/x.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(rel.encode())
    found = {s.path.name: (s.label, s.attack_type) for s in scan_folder(tmp_path)}
    assert found == {
        "a.jpg": (LIVE, "live"),
        "b.png": (LIVE, "live"),
        "c.jpg": (SPOOF, "spoof"),
        "d.jpg": (SPOOF, "mask"),
    }
    manifest = tmp_path / "m.csv"
    rows = ["path,label,attack_type,subject_id"]
    rows += [f"live/a.jpg,live,,s{i}" for i in range(40)]
    rows += [f"spoof/c.jpg,spoof,replay,s{i}" for i in range(40)]
    manifest.write_text("\n".join(rows) + "\n")
    samples = assign_splits(read_manifest(manifest), 0.2, 0.2)
    assert samples[0].path == tmp_path / "live" / "a.jpg"
    assert {s.attack_type for s in samples if s.label == SPOOF} == {"replay"}
    split_of_subject: dict[str, set[str]] = {}
    for s in samples:
        split_of_subject.setdefault(str(s.subject_id), set()).add(s.split)
    assert all(len(v) == 1 for v in split_of_subject.values())  # no subject straddles
    assert {s.split for s in samples} == {"train", "val", "test"}
    # Determinism: the same subjects split the same way again.
    again = assign_splits(read_manifest(manifest), 0.2, 0.2)
    assert [s.split for s in again] == [s.split for s in samples]
    headerless = tmp_path / "h.csv"
    headerless.write_text("live/a.jpg,real\nspoof/c.jpg,1,print\n")
    parsed = read_manifest(headerless)
    assert [(s.label, s.attack_type) for s in parsed] == [(LIVE, "live"), (SPOOF, "print")]


def test_imagenet_weights_load_from_local_safetensors(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    imagenet_like = timm.create_model("efficientnet_b2", pretrained=False, num_classes=1000)
    state: dict[str, Any] = {k: v.contiguous() for k, v in imagenet_like.state_dict().items()}
    weights = tmp_path / "efficientnet_b2.safetensors"
    save_file(state, str(weights))
    model = build_model(0.3, weights)
    assert torch.equal(model.state_dict()["conv_stem.weight"], state["conv_stem.weight"])
    assert model.state_dict()["classifier.weight"].shape == (2, 1408)
    with pytest.raises(ValueError, match="safetensors"):
        load_backbone_weights(model, tmp_path / "weights.pth")


def test_cli_parses_options_and_refuses_missing_data(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from training.cli import app

    runner = CliRunner()
    wide = {"COLUMNS": "200"}  # rich wraps help and errors to the terminal width
    helped = runner.invoke(app, ["liveness", "--help"], env=wide)
    assert helped.exit_code == 0
    for option in (
        "--out",
        "--epochs",
        "--batch-size",
        "--input-size",
        "--crop-scale",
        "--patience",
        "--max-steps-per-epoch",
        "--imagenet-weights",
        "--manifest",
        "--seed",
        "--serving-face-pack",
        "--no-serving-face-pack",
        "--celeba-spoof",
        "--precision",
        "--balance",
        "--resume",
        "--num-workers",
    ):
        assert option in helped.output, option
    refused = runner.invoke(app, ["liveness", "--out", str(tmp_path / "o")], env=wide)
    assert refused.exit_code != 0
    assert "data folder or a CSV manifest" in refused.output
    for option, bad in (("--precision", "fp8"), ("--balance", "oversample")):
        wrong = runner.invoke(app, ["liveness", str(tmp_path), option, bad], env=wide)
        assert wrong.exit_code != 0 and option in wrong.output
    assert not (tmp_path / "o").exists()


def test_exported_model_scores_in_the_worker_stage(run: tuple[TrainConfig, TrainResult]) -> None:
    """The training job's output folder is a deployable FACEAUTH_LIVENESS_MODEL_DIR."""
    import cv2

    from shared.paths import faces_dir, sample_face_pack_dir
    from workers.inference.face_pack import FacePack
    from workers.inference.liveness import LivenessScorer

    _, result = run
    scorer = LivenessScorer.load(result.onnx_path.parent)
    assert scorer.name and scorer.version.startswith("test-run")
    pack = FacePack.load(sample_face_pack_dir())
    items = []
    for path in sorted((faces_dir() / "pad").glob("*/*.jpg")):
        image = cv2.imread(str(path))
        items.append((image, pack.detect(image)[0].bbox))
    scores = scorer.score_many(items)
    assert len(scores) == len(items)
    assert all(0.0 <= s.spoof_score <= 1.0 for s in scores)
    assert all(s.model_version == scorer.version for s in scores)


# --- serving crop calibration (SCRFD boxes at serving, MediaPipe boxes in training) -----------


def test_export_calibrates_the_serving_crop(
    run: tuple[TrainConfig, TrainResult], serving_pack: Path
) -> None:
    config, result = run
    spec = LivenessSpec.load(result.onnx_path.parent)
    member = spec.members[0]
    cal = spec.training["box_calibration"]
    assert cal["serving_detector"] == FacePackBoxDetector.load(serving_pack).version
    assert cal["serving_detector"].startswith("facepack-test:det_500m=")
    assert cal["train_detector"] == "mediapipe-blazeface-auto"
    assert spec.training["crop_scale"] == cal["train_crop_scale"] == config.crop_scale == 1.6
    # 28 usable faces; SCRFD finds nearly all of them (a blurred screen re-shot may slip).
    assert 20 <= cal["n_faces"] <= 28 and cal["n_faces"] + cal["n_unmatched"] == 28
    # SCRFD's square box is 1.08-1.41x MediaPipe's on these photos, and sits higher.
    assert 1.0 < cal["p10_ratio"] <= cal["median_ratio"] <= cal["p90_ratio"] < 1.5
    assert -0.05 < cal["median_shift"][0] < 0.05 and -0.2 < cal["median_shift"][1] < -0.05
    assert member.crop_scale == pytest.approx(1.6 / cal["median_ratio"], abs=1e-6)
    assert 1.0 < member.crop_scale < 1.6
    assert cal["serving_crop_scale"] == member.crop_scale
    assert list(member.crop_shift) == cal["serving_crop_shift"]
    # Down the face (the SCRFD centre is above MediaPipe's), by a fraction of the box.
    assert abs(member.crop_shift[0]) < 0.05 and 0.03 < member.crop_shift[1] < 0.15
    assert cal["median_crop_iou"] > 0.85 > cal["median_crop_iou_uncalibrated"]
    doc = json.loads(result.spec_path.read_text())
    assert doc["members"][0]["crop_shift"] == cal["serving_crop_shift"]


def _mediapipe_box(image_bgr: np.ndarray) -> tuple[float, float, float, float]:
    h, w = image_bgr.shape[:2]
    with MediaPipeFaceDetector("auto", 0.5) as detector:
        chosen = choose_face(detector.detect(np.ascontiguousarray(image_bgr[..., ::-1])), w, h)
    assert not isinstance(chosen, str), chosen
    return chosen.box


def test_calibrated_serving_crop_shows_the_training_crop(
    run: tuple[TrainConfig, TrainResult], faces: Path, serving_pack: Path
) -> None:
    """On a real photo, the exported crop around SCRFD's box covers the training crop."""
    from workers.inference.face_pack import FacePack
    from workers.inference.liveness import prepare_batch

    config, result = run
    member = LivenessSpec.load(result.onnx_path.parent).members[0]
    pixels = cv2.imread(str(faces / "identities" / "obama" / "obama.jpg"), cv2.IMREAD_COLOR)
    assert pixels is not None
    image = np.asarray(pixels, dtype=np.uint8)
    h, w = image.shape[:2]
    train_box = _mediapipe_box(image)
    scrfd_box = FacePack.load(serving_pack).detect(image)[0].bbox

    trained_on = scaled_box(w, h, train_box, config.crop_scale, square=True)
    calibrated = scaled_box(
        w, h, scrfd_box, member.crop_scale, square=True, shift=member.crop_shift
    )
    uncalibrated = scaled_box(w, h, scrfd_box, config.crop_scale, square=True)
    calibrated_iou, uncalibrated_iou = iou(trained_on, calibrated), iou(trained_on, uncalibrated)
    assert calibrated_iou > 0.8
    assert uncalibrated_iou < 0.7 and calibrated_iou > uncalibrated_iou + 0.15

    # The same, pixel for pixel: the calibrated serving crop looks like the training crop.
    size = (INPUT_SIZE, INPUT_SIZE)
    seen = crop_face(image, train_box, config.crop_scale, size, square=True).astype(np.float32)
    served = crop_face(
        image, scrfd_box, member.crop_scale, size, square=True, shift=member.crop_shift
    )
    plain = crop_face(image, scrfd_box, config.crop_scale, size, square=True)
    assert np.abs(served - seen).mean() < 0.6 * np.abs(plain - seen).mean()
    # And the workers' stage feeds the model exactly that crop (shift included).
    batch = prepare_batch(member, [image], [scrfd_box])
    assert np.allclose(batch, normalise_bgr_batch(served[np.newaxis]), atol=1e-5)


def test_box_matching_and_calibration_by_hand(caplog: pytest.LogCaptureFixture) -> None:
    train = (100.0, 100.0, 200.0, 200.0)  # side 100, centre (150, 150)
    # Side 125 (ratio 1.25), centre (150, 140): 0.1 training sides higher.
    serving = (87.5, 77.5, 212.5, 202.5)
    elsewhere = (400.0, 100.0, 530.0, 230.0)  # bigger, but another face
    match = match_box(train, [elsewhere, serving])
    assert match is not None
    assert (match.ratio, match.dx, match.dy) == pytest.approx((1.25, 0.0, -0.1))
    assert match.serving_shift == pytest.approx((0.0, 0.08))
    assert match_box(train, [elsewhere]) is None and match_box(train, []) is None

    matches = [BoxMatch(r, 0.0, -0.1, 0.7) for r in (1.1, 1.2, 1.25, 1.3, 1.4)]
    cal = calibrate(
        matches,
        n_unmatched=2,
        train_crop_scale=1.6,
        serving_detector="pack:det=1",
        train_detector="mediapipe-blazeface-short",
        serving_det_size=640,
    )
    assert cal is not None
    assert cal.median_ratio == 1.25 and cal.serving_crop_scale == pytest.approx(1.28)
    assert cal.p10_ratio == pytest.approx(1.14) and cal.p90_ratio == pytest.approx(1.36)
    assert cal.serving_crop_shift == pytest.approx((0.0, 0.08))  # median of 0.1 / r
    assert cal.median_shift == pytest.approx((0.0, -0.1))
    # Exact for the median face (r = 1.25), close for the others; the training scale shows
    # the median face 1.25**2 times the area.
    assert 0.9 < cal.median_crop_iou < 1.0
    assert cal.median_crop_iou_uncalibrated == pytest.approx(1.6**2 / 2.0**2, abs=0.05)
    assert cal.to_dict()["n_faces"] == 5 and cal.to_dict()["median_shift"] == [0.0, -0.1]

    assert "only 5 face(s)" in caplog.text  # a median of five is flagged as rough
    caplog.clear()
    with caplog.at_level("WARNING", logger="training.liveness.calibration"):
        assert serving_crop(1.6, cal) == (cal.serving_crop_scale, cal.serving_crop_shift)
        assert not caplog.records
        assert serving_crop(1.6, None) == (1.6, (0.0, 0.0))
    assert "serving crop may differ" in caplog.text


def test_crop_shift_moves_the_box_and_defaults_to_none() -> None:
    box = (100.0, 100.0, 200.0, 180.0)  # 100 x 80, squared to 100, centre (150, 140)
    assert scaled_box(1000, 1000, box, 2.0, square=True) == (50, 40, 250, 240)
    assert scaled_box(1000, 1000, box, 2.0, square=True, shift=(0.0, 0.0)) == (50, 40, 250, 240)
    # Shifted by a fraction of the squared side (100 px), before the growth.
    assert scaled_box(1000, 1000, box, 2.0, square=True, shift=(-0.1, 0.25)) == (40, 65, 240, 265)
    # Not square: each axis moves by its own side; still slid back inside the frame.
    assert scaled_box(1000, 1000, box, 1.0, square=False, shift=(0.5, -0.5)) == (150, 60, 250, 140)
    assert scaled_box(300, 300, box, 2.0, square=True, shift=(1.0, 0.0)) == (99, 40, 299, 240)

    member = LivenessMember(
        file="m.onnx",
        crop_scale=1.3,
        square=True,
        input_width=8,
        input_height=8,
        color_order="RGB",
        live_class_index=0,
    )
    assert member.crop_shift == (0.0, 0.0)
    assert "crop_shift" not in json.loads(member.model_dump_json())  # old workers still load it
    shifted = member.model_copy(update={"crop_shift": (0.01, 0.08)})
    spec = LivenessSpec(name="n", version="v", members=(shifted,))
    assert json.loads(spec.to_json())["members"][0]["crop_shift"] == [0.01, 0.08]
    assert LivenessSpec.from_json(spec.to_json(), source="test") == spec
    bad = spec.to_json().replace("0.08", "1.5")
    with pytest.raises(Exception, match="crop_shift"):
        LivenessSpec.from_json(bad, source="test")
