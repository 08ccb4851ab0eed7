"""Liveness scoring with the real MiniFASNet pair on real photos (../shared, read-only).

Face boxes come from the SCRFD detector of ../shared/models/facepack-test, loaded
directly with InsightFace so these tests do not depend on the workers' face stage.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import pytest
from typer.testing import CliRunner

from shared.config import get_settings
from shared.errors import ErrorCode, ModelLoadError
from shared.liveness_spec import (
    MINIFASNET_V2_V1SE,
    ONNX_METADATA_KEY,
    SPEC_FILENAME,
    LivenessMember,
    LivenessSpec,
)
from workers.cli.liveness import app as liveness_cli
from workers.inference.liveness import LivenessScore, LivenessScorer
from workers.inference.onnx_session import CPU_PROVIDER, create_session, resolve_providers

SHARED = Path(
    os.environ.get("FACEAUTH_SHARED_DIR") or Path(__file__).resolve().parents[1] / ".." / "shared"
).resolve()
MINIFASNET = SHARED / "models" / "liveness" / "minifasnet"
FACE_PACK = SHARED / "models" / "facepack-test"
FACES = SHARED / "faces"
V2_FILE = "2.7_80x80_MiniFASNetV2.onnx"
V1SE_FILE = "4_0_0_80x80_MiniFASNetV1SE.onnx"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}

pytestmark = pytest.mark.skipif(
    not MINIFASNET.is_dir() or not FACE_PACK.is_dir(), reason=f"shared assets missing: {SHARED}"
)

Image = npt.NDArray[np.uint8]
Box = list[float]


def _images(*folders: Path) -> list[Path]:
    return sorted(p for f in folders for p in f.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


LIVE = _images(FACES / "pad" / "live", FACES / "identities")
SPOOF = _images(FACES / "pad" / "print", FACES / "pad" / "replay")


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Settings are cached per process; keep any FACEAUTH_* of the caller's shell out.
    for key in list(os.environ):
        if key.startswith("FACEAUTH_") and key != "FACEAUTH_SHARED_DIR":
            monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def detector() -> Any:
    from insightface.model_zoo import get_model

    det = get_model(str(FACE_PACK / "det_500m.onnx"), providers=[CPU_PROVIDER])
    det.prepare(ctx_id=-1, input_size=(640, 640))
    return det


def _u8(image: Any) -> Image:
    """OpenCV's stubs type results loosely; the arrays are uint8 BGR."""
    assert image is not None
    return np.asarray(image, dtype=np.uint8)


def _imread(path: Path) -> Image:
    return _u8(cv2.imread(str(path), cv2.IMREAD_COLOR))


def _largest_box(det: Any, image: Image) -> Box:
    boxes, _ = det.detect(image, max_num=0)
    assert len(boxes) > 0, "test photo without a detectable face"
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return [float(v) for v in boxes[int(np.argmax(areas)), :4]]


@pytest.fixture(scope="module")
def faces(detector: Any) -> dict[Path, tuple[Image, Box]]:
    out = {}
    for path in [*LIVE, *SPOOF]:
        image = _imread(path)
        out[path] = (image, _largest_box(detector, image))
    return out


@pytest.fixture(scope="module")
def scorer() -> LivenessScorer:
    return LivenessScorer.load(MINIFASNET, providers=[CPU_PROVIDER])


@pytest.fixture(scope="module")
def scores(
    scorer: LivenessScorer, faces: dict[Path, tuple[Image, Box]]
) -> dict[Path, LivenessScore]:
    return {path: scorer.score(image, [box])[0] for path, (image, box) in faces.items()}


def _link_models(dest: Path, files: tuple[str, ...] = (V2_FILE, V1SE_FILE)) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in files:
        (dest / name).symlink_to(MINIFASNET / name)


# --- scores on real photos -----------------------------------------------------------------


def test_photo_sets_are_present() -> None:
    assert len(SPOOF) == 2
    assert len(LIVE) == 13


def test_print_and_replay_score_above_every_live_photo(
    scores: dict[Path, LivenessScore],
) -> None:
    live = {p.relative_to(FACES): scores[p].spoof_score for p in LIVE}
    spoof = {p.relative_to(FACES): scores[p].spoof_score for p in SPOOF}
    print("live spoof scores:", {str(k): round(v, 4) for k, v in live.items()})
    print("attack spoof scores:", {str(k): round(v, 4) for k, v in spoof.items()})
    assert min(spoof.values()) > max(live.values())


def test_default_threshold_flags_attacks_and_passes_pad_live(
    scores: dict[Path, LivenessScore], scorer: LivenessScorer
) -> None:
    threshold = scorer.default_threshold
    assert threshold == 0.5
    for path in SPOOF:
        assert scores[path].is_spoof(threshold), path
    for path in _images(FACES / "pad" / "live"):
        assert not scores[path].is_spoof(threshold), path
        assert scores[path].spoof_score < 0.05


def test_score_fields_are_consistent(
    scores: dict[Path, LivenessScore], scorer: LivenessScorer
) -> None:
    for result in scores.values():
        assert 0.0 <= result.spoof_score <= 1.0
        assert result.spoof_score == pytest.approx(1.0 - result.live_probability, abs=1e-12)
        assert [m.file for m in result.members] == [V2_FILE, V1SE_FILE]
        member_mean = np.mean([m.live_probability for m in result.members])
        assert result.live_probability == pytest.approx(member_mean, abs=1e-12)
        assert result.model_name == "minifasnet-v2+v1se"
        assert result.model_version == scorer.version
        assert result.to_dict()["members"][0]["file"] == V2_FILE


def test_scorer_identity_and_batching(scorer: LivenessScorer) -> None:
    assert scorer.name == "minifasnet-v2+v1se"
    assert re.fullmatch(r"2020\.1\+[0-9a-f]{12}", scorer.version)
    assert scorer.providers == [CPU_PROVIDER]
    assert scorer.member_files == (V2_FILE, V1SE_FILE)


def test_batch_across_images_matches_one_by_one(
    scorer: LivenessScorer,
    faces: dict[Path, tuple[Image, Box]],
    scores: dict[Path, LivenessScore],
) -> None:
    paths = list(faces)
    batched = scorer.score_many([faces[p] for p in paths])
    assert len(batched) == len(paths)
    for path, result in zip(paths, batched, strict=True):
        assert result.spoof_score == pytest.approx(scores[path].spoof_score, abs=1e-5)
        for m_batch, m_single in zip(result.members, scores[path].members, strict=True):
            assert m_batch.live_probability == pytest.approx(m_single.live_probability, abs=1e-5)


def test_all_faces_of_a_group_photo_in_one_call(scorer: LivenessScorer, detector: Any) -> None:
    image = _imread(FACES / "group" / "t1.jpg")
    boxes, _ = detector.detect(image, max_num=0)
    assert len(boxes) >= 5
    together = scorer.score(image, [list(b) for b in boxes])  # 5-column rows: score ignored
    alone = [scorer.score(image, [b[:4]])[0] for b in boxes]
    assert [r.spoof_score for r in together] == pytest.approx(
        [r.spoof_score for r in alone], abs=1e-5
    )
    # Different faces give different scores: the boxes really reach their own crops.
    assert len({round(r.spoof_score, 6) for r in together}) == len(together)


def test_no_boxes_and_bad_boxes(scorer: LivenessScorer) -> None:
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    assert scorer.score(image, []) == []
    with pytest.raises(ValueError, match="invalid face box"):
        scorer.score(image, [[50.0, 50.0, 40.0, 60.0]])
    with pytest.raises(ValueError, match="uint8"):
        scorer.score(image.astype(np.float32), [[10.0, 10.0, 60.0, 60.0]])


def test_grey_and_bgra_images_score_like_bgr(scorer: LivenessScorer, detector: Any) -> None:
    bgr = _imread(FACES / "pad" / "live" / "image_T1.jpg")
    box = _largest_box(detector, bgr)
    bgra = _u8(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    assert scorer.score(bgra, [box])[0].spoof_score == pytest.approx(
        scorer.score(bgr, [box])[0].spoof_score, abs=1e-6
    )
    grey = _u8(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    grey_bgr = _u8(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    assert scorer.score(grey, [box])[0].spoof_score == pytest.approx(
        scorer.score(grey_bgr, [box])[0].spoof_score, abs=1e-6
    )


# --- spec loading --------------------------------------------------------------------------


def test_builtin_spec_for_the_read_only_minifasnet_folder() -> None:
    spec = LivenessSpec.load(MINIFASNET)
    assert spec == MINIFASNET_V2_V1SE
    assert [(m.file, m.crop_scale, m.live_class_index) for m in spec.members] == [
        (V2_FILE, 2.7, 1),
        (V1SE_FILE, 4.0, 1),
    ]
    assert not (MINIFASNET / SPEC_FILENAME).exists()


def test_spec_json_round_trip_matches_the_contract() -> None:
    doc = json.loads(MINIFASNET_V2_V1SE.to_json())
    assert doc["format"] == "faceauth-liveness/1"
    assert doc["combine"] == "mean"
    assert set(doc["members"][0]) == {
        "file", "crop_scale", "square", "input_width", "input_height", "color_order",
        "pixel_scale", "mean", "std", "live_class_index",
    }  # fmt: skip
    assert LivenessSpec.from_json(MINIFASNET_V2_V1SE.to_json(), source="test") == (
        MINIFASNET_V2_V1SE
    )


def test_liveness_json_folder(
    tmp_path: Path, scorer: LivenessScorer, faces: dict[Path, tuple[Image, Box]]
) -> None:
    _link_models(tmp_path)
    spec = MINIFASNET_V2_V1SE.model_copy(update={"name": "my-pad", "version": "run-42"})
    (tmp_path / SPEC_FILENAME).write_text(spec.to_json())

    loaded = LivenessScorer.load(tmp_path, providers=[CPU_PROVIDER])
    assert loaded.name == "my-pad"
    # Same ONNX bytes, so the same digest after a different spec version.
    assert loaded.version == "run-42+" + scorer.version.split("+")[1]
    items = list(faces.values())
    for mine, builtin in zip(loaded.score_many(items), scorer.score_many(items), strict=True):
        assert mine.spoof_score == pytest.approx(builtin.spoof_score, abs=1e-6)
        assert mine.model_name == "my-pad"


def _write_with_metadata(src: Path, dest: Path, text: str) -> None:
    model = onnx.load(str(src))
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, text
    onnx.save(model, str(dest))


def test_onnx_metadata_only_folder(
    tmp_path: Path, scorer: LivenessScorer, faces: dict[Path, tuple[Image, Box]]
) -> None:
    one = MINIFASNET_V2_V1SE.model_copy(
        update={"name": "v2-only", "version": "7", "members": MINIFASNET_V2_V1SE.members[:1]}
    )
    # Saved under another name than the metadata says: the lone file is the member.
    _write_with_metadata(MINIFASNET / V2_FILE, tmp_path / "deployed.onnx", one.to_json())

    spec = LivenessSpec.load(tmp_path)
    assert spec.name == "v2-only"
    assert [m.file for m in spec.members] == ["deployed.onnx"]

    loaded = LivenessScorer.load(tmp_path, providers=[CPU_PROVIDER])
    items = list(faces.values())
    for mine, pair in zip(loaded.score_many(items), scorer.score_many(items), strict=True):
        assert mine.live_probability == pytest.approx(pair.members[0].live_probability, abs=1e-6)


def test_liveness_json_wins_over_onnx_metadata(tmp_path: Path) -> None:
    meta = MINIFASNET_V2_V1SE.model_copy(
        update={"name": "from-metadata", "members": MINIFASNET_V2_V1SE.members[:1]}
    )
    _write_with_metadata(MINIFASNET / V2_FILE, tmp_path / V2_FILE, meta.to_json())
    (tmp_path / SPEC_FILENAME).write_text(meta.model_copy(update={"name": "from-json"}).to_json())
    assert LivenessSpec.load(tmp_path).name == "from-json"


def _assert_invalid(folder: Path, *fragments: str) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as info:
        LivenessScorer.load(folder, providers=[CPU_PROVIDER])
    assert info.value.code == ErrorCode.LIVENESS_MODEL_INVALID
    assert str(folder) in info.value.message
    for fragment in fragments:
        assert fragment in info.value.message
    return info.value


def test_missing_folder(tmp_path: Path) -> None:
    _assert_invalid(tmp_path / "nope", "does not exist")


def test_garbage_onnx_without_spec(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"this is not a protobuf \x00\xff" * 50)
    _assert_invalid(tmp_path, "model.onnx", "not a readable ONNX file")


def test_garbage_onnx_with_spec(tmp_path: Path) -> None:
    one = MINIFASNET_V2_V1SE.model_copy(update={"members": MINIFASNET_V2_V1SE.members[:1]})
    (tmp_path / SPEC_FILENAME).write_text(one.to_json())
    (tmp_path / V2_FILE).write_bytes(b"\x08\x07garbage" * 100)
    _assert_invalid(tmp_path, "cannot load ONNX model", V2_FILE)


def test_lone_onnx_without_metadata(tmp_path: Path) -> None:
    _link_models(tmp_path, (V2_FILE,))
    _assert_invalid(tmp_path, f"no {SPEC_FILENAME}", ONNX_METADATA_KEY)


def test_unknown_set_of_onnx_files(tmp_path: Path) -> None:
    _link_models(tmp_path)
    (tmp_path / "extra.onnx").symlink_to(FACE_PACK / "det_500m.onnx")
    _assert_invalid(tmp_path, "expected liveness.json", "minifasnet-v2+v1se", "extra.onnx")


def test_empty_folder(tmp_path: Path) -> None:
    _assert_invalid(tmp_path, "found ONNX files []")


def test_spec_naming_a_missing_file(tmp_path: Path) -> None:
    _link_models(tmp_path, (V2_FILE,))
    (tmp_path / SPEC_FILENAME).write_text(MINIFASNET_V2_V1SE.to_json())
    _assert_invalid(tmp_path, V1SE_FILE, "not in the folder")


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ("{not json", "invalid liveness spec"),
        ('{"format": "faceauth-liveness/1", "name": "x", "version": "1"}', "members"),
        (
            MINIFASNET_V2_V1SE.to_json().replace('"combine"', '"extra": 1, "combine"'),
            "extra",
        ),
        (MINIFASNET_V2_V1SE.to_json().replace('"BGR"', '"YUV"'), "color_order"),
        (
            MINIFASNET_V2_V1SE.to_json().replace(f'"{V2_FILE}"', '"../escape.onnx"'),
            "plain file name",
        ),
    ],
)
def test_invalid_liveness_json(tmp_path: Path, document: str, fragment: str) -> None:
    _link_models(tmp_path)
    (tmp_path / SPEC_FILENAME).write_text(document)
    _assert_invalid(tmp_path, fragment)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"input_width": 112, "input_height": 112}, "spec says input"),
        ({"live_class_index": 3}, "live_class_index=3"),
    ],
)
def test_spec_that_does_not_fit_the_model(
    tmp_path: Path, change: dict[str, Any], fragment: str
) -> None:
    _link_models(tmp_path, (V2_FILE,))
    member: LivenessMember = MINIFASNET_V2_V1SE.members[0].model_copy(update=change)
    spec = MINIFASNET_V2_V1SE.model_copy(update={"members": (member,)})
    (tmp_path / SPEC_FILENAME).write_text(spec.to_json())
    _assert_invalid(tmp_path, V2_FILE, fragment)


# --- ONNX sessions -------------------------------------------------------------------------


def test_providers_auto_and_explicit() -> None:
    assert resolve_providers(None)[-1] == CPU_PROVIDER
    assert resolve_providers([CPU_PROVIDER]) == [CPU_PROVIDER]
    with pytest.raises(ModelLoadError) as info:
        resolve_providers(["NoSuchExecutionProvider"])
    assert info.value.code == ErrorCode.ONNX_PROVIDER_UNAVAILABLE


def test_providers_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEAUTH_ORT_PROVIDERS", '["NoSuchExecutionProvider"]')
    get_settings.cache_clear()
    with pytest.raises(ModelLoadError):
        resolve_providers(None)


def test_fixed_batch_model_is_opened_for_batches() -> None:
    fixed = create_session(MINIFASNET / V2_FILE, providers=[CPU_PROVIDER])
    assert fixed.fixed_batch == 1 and not fixed.batch_opened
    opened = create_session(MINIFASNET / V2_FILE, providers=[CPU_PROVIDER], open_batch=True)
    assert opened.fixed_batch is None and opened.batch_opened
    batch = np.random.default_rng(1).uniform(0, 255, (4, 3, 80, 80)).astype(np.float32)
    # The fixed session runs the batch one face at a time; results must agree.
    np.testing.assert_allclose(opened.run(batch), fixed.run(batch), rtol=1e-4, atol=1e-4)
    assert opened.run(batch).shape == (4, 3)


# --- command line --------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    runner = CliRunner()
    return runner.invoke(
        liveness_cli,
        ["score", "--model-dir", str(MINIFASNET), "--face-pack", str(FACE_PACK), *args],
    )


def test_cli_json_with_errors(tmp_path: Path) -> None:
    not_image = tmp_path / "notes.txt"
    not_image.write_text("not an image")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, dtype=np.uint8))
    printed = FACES / "pad" / "print" / "image_F1.jpg"
    live = FACES / "pad" / "live" / "image_T1.jpg"
    missing = tmp_path / "missing.jpg"

    result = _cli("--json", str(printed), str(live), str(not_image), str(blank), str(missing))

    assert result.exit_code == 2, result.output
    entries = json.loads(result.stdout)
    assert [e["path"] for e in entries] == [str(printed), str(live), str(not_image), str(blank),
                                            str(missing)]  # fmt: skip
    assert entries[0]["decision"] == "spoof" and entries[0]["spoof_score"] > 0.5
    assert entries[1]["decision"] == "live" and entries[1]["spoof_score"] < 0.5
    for entry in entries[:2]:
        assert entry["model_name"] == "minifasnet-v2+v1se"
        assert re.fullmatch(r"2020\.1\+[0-9a-f]{12}", entry["model_version"])
        assert entry["faces"] == 1
    assert entries[2]["error"]["code"] == "image_undecodable"
    assert entries[3]["error"]["code"] == "no_face"
    assert entries[4]["error"]["code"] == "image_not_found"
    for entry in entries[2:]:
        assert "decision" not in entry and entry["error"]["message"]


def test_cli_table_all_decided() -> None:
    replay = FACES / "pad" / "replay" / "image_F2.jpg"
    live = FACES / "pad" / "live" / "image_T1.jpg"
    result = _cli(str(replay), str(live))
    assert result.exit_code == 0, result.output
    assert "spoof" in result.stdout and "live" in result.stdout
    assert "minifasnet-v2+v1se" in result.stdout


def test_cli_threshold_changes_the_decision() -> None:
    printed = FACES / "pad" / "print" / "image_F1.jpg"
    result = _cli("--json", "--threshold", "0.99", str(printed))
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)[0]
    assert entry["decision"] == "live" and entry["threshold"] == 0.99


def test_cli_bad_model_dir_exits_1(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        liveness_cli,
        ["score", "--model-dir", str(tmp_path), "--face-pack", str(FACE_PACK), "x.jpg"],
    )
    assert result.exit_code == 1
    assert "liveness_model_invalid" in result.stderr


def test_cli_without_model_dir_exits_1() -> None:
    result = CliRunner().invoke(liveness_cli, ["score", "x.jpg"])
    assert result.exit_code == 1
    assert "FACEAUTH_LIVENESS_MODEL_DIR" in result.stderr
