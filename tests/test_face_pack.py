"""FacePack on the real test pack (../shared/models/facepack-test) and real photos."""

from __future__ import annotations

import itertools
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers_faces import (
    DETECTOR_FILE,
    FACE_PACK_DIR,
    GROUP_DIR,
    IDENTITIES_DIR,
    RECOGNIZER_FILE,
    identity_photos,
    read_bgr,
    shared_pack,
)

from shared.config import Settings
from shared.errors import ErrorCode, ModelLoadError
from workers.inference.face_pack import FacePack, file_digest, get_face_pack, pack_version

# The README's genuine range is about 0.53-0.78 and impostors stay below about 0.25; these
# bounds leave room for numeric differences between CPU and GPU providers.
GENUINE_FLOOR = 0.45
IMPOSTOR_CEILING = 0.30


def _copy_pack(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "facepack-test"
    folder.mkdir()
    for name in names:
        shutil.copyfile(FACE_PACK_DIR / name, folder / name)
    return folder


def test_pack_loads_with_dimension_read_from_the_model() -> None:
    pack = shared_pack()
    declared = onnx.load(str(FACE_PACK_DIR / RECOGNIZER_FILE)).graph.output[0]
    declared_dim = declared.type.tensor_type.shape.dim[1].dim_value
    assert declared_dim == 128
    assert pack.embedding_dim == declared_dim
    assert pack.model_name == "facepack-test"
    assert pack.model_files["detection"].name == DETECTOR_FILE
    assert pack.model_files["recognition"].name == RECOGNIZER_FILE
    assert not pack.has_landmark_3d
    assert "CPUExecutionProvider" in pack.providers
    # The MobileFaceNet export has batch fixed at 1; the pack opens it for batched runs.
    assert pack.recognizer_batched


def test_model_version_names_each_file_and_is_stable_across_loads() -> None:
    first = shared_pack().model_version
    second = FacePack.load(FACE_PACK_DIR).model_version
    assert first == second
    assert re.fullmatch(
        r"facepack-test:det_500m=[0-9a-f]{8},w128_mobilefacenet=[0-9a-f]{8}", first
    ), first
    # ../shared/README.md gives the detector's sha256 as 5e4447f5...
    assert "det_500m=5e4447f5" in first


def test_pack_version_changes_when_a_model_file_changes(tmp_path: Path) -> None:
    folder = _copy_pack(tmp_path, DETECTOR_FILE, RECOGNIZER_FILE)
    files = [folder / DETECTOR_FILE, folder / RECOGNIZER_FILE]
    before = pack_version(folder.name, files)
    assert before == shared_pack().model_version  # same bytes, same version
    assert pack_version(folder.name, list(reversed(files))) == before  # order-independent

    recognizer = folder / RECOGNIZER_FILE
    data = bytearray(recognizer.read_bytes())
    data[-1] ^= 0xFF
    recognizer.write_bytes(bytes(data))
    after = pack_version(folder.name, files)
    assert after != before
    assert after.split(",")[0] == before.split(",")[0]  # the detector's part is unchanged
    assert after.endswith(f"w128_mobilefacenet={file_digest(recognizer)}")


def test_missing_pack_dir_is_a_model_load_error(tmp_path: Path) -> None:
    missing = tmp_path / "buffalo_l"
    with pytest.raises(ModelLoadError) as caught:
        FacePack.load(missing)
    assert caught.value.code == ErrorCode.MODEL_PACK_INVALID
    assert str(missing) in caught.value.message
    assert caught.value.details["pack_dir"] == str(missing)
    assert not missing.exists()  # nothing was downloaded or created


def test_pack_without_recognizer_is_refused(tmp_path: Path) -> None:
    folder = _copy_pack(tmp_path, DETECTOR_FILE)
    with pytest.raises(ModelLoadError) as caught:
        FacePack.load(folder)
    assert caught.value.code == ErrorCode.MODEL_PACK_INVALID
    assert str(folder) in caught.value.message
    assert "no recognition model" in caught.value.message
    assert "w600k_r50.onnx" in caught.value.message


def test_pack_without_detector_is_refused(tmp_path: Path) -> None:
    folder = _copy_pack(tmp_path, RECOGNIZER_FILE)
    with pytest.raises(ModelLoadError) as caught:
        FacePack.load(folder)
    assert str(folder) in caught.value.message
    assert "no detection model" in caught.value.message


def test_empty_pack_and_corrupt_file_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"has no \.onnx files"):
        FacePack.load(empty)

    folder = _copy_pack(tmp_path, DETECTOR_FILE, RECOGNIZER_FILE)
    (folder / "broken.onnx").write_bytes(b"this is not an onnx model")
    with pytest.raises(ModelLoadError) as caught:
        FacePack.load(folder)
    assert "broken.onnx" in caught.value.message
    assert caught.value.code == ErrorCode.MODEL_PACK_INVALID


def test_detect_returns_every_face_largest_first() -> None:
    image = read_bgr(GROUP_DIR / "t1.jpg")
    faces = shared_pack().detect(image)
    assert len(faces) == 6  # ../shared/README.md: t1.jpg has 6 faces
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    height, width = image.shape[:2]
    for face in faces:
        x1, y1, x2, y2 = face.bbox
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert face.det_score >= 0.5
        assert face.kps.shape == (5, 2) and face.kps.dtype == np.float32
        # The keypoints lie inside (or at the edge of) their own box.
        assert np.all(face.kps[:, 0] >= x1 - 2) and np.all(face.kps[:, 0] <= x2 + 2)
        assert face.landmark_3d_68 is None
        assert face.pose is not None and face.pose.source == "5_point"


def test_detect_refuses_a_non_image() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        shared_pack().detect(np.zeros((10, 10), dtype=np.uint8))


def test_embeddings_are_normalised_and_one_batch_equals_one_by_one() -> None:
    pack = shared_pack()
    items = []
    for _, path in identity_photos():
        image = read_bgr(path)
        (face,) = pack.detect(image)
        items.append((image, face.kps))
    batch = pack.embed(items)
    assert batch.shape == (len(items), pack.embedding_dim)
    assert batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    single = np.concatenate([pack.embed([item]) for item in items])
    assert float(np.abs(batch - single).max()) < 1e-5


def test_same_person_is_more_similar_than_other_people() -> None:
    pack = shared_pack()
    people, items = [], []
    for person, path in identity_photos():
        image = read_bgr(path)
        (face,) = pack.detect(image)
        people.append(person)
        items.append((image, face.kps))
    emb = pack.embed(items)
    sims = emb @ emb.T
    genuine: list[float] = []
    impostor: list[float] = []
    for i, j in itertools.combinations(range(len(people)), 2):
        (genuine if people[i] == people[j] else impostor).append(float(sims[i, j]))
    print(
        f"\ngenuine {min(genuine):.3f}..{max(genuine):.3f} ({len(genuine)} pairs), "
        f"impostor {min(impostor):.3f}..{max(impostor):.3f} ({len(impostor)} pairs)"
    )
    assert min(genuine) > max(impostor)
    assert min(genuine) > GENUINE_FLOOR
    assert max(impostor) < IMPOSTOR_CEILING
    # Rank-1 identification: every photo's nearest other photo shows the same person.
    np.fill_diagonal(sims, -np.inf)
    assert [people[int(k)] for k in sims.argmax(axis=1)] == people


def test_embed_edge_cases() -> None:
    pack = shared_pack()
    assert pack.embed([]).shape == (0, pack.embedding_dim)
    image = read_bgr(IDENTITIES_DIR / "obama" / "obama.jpg")
    with pytest.raises(ValueError, match=r"\(5, 2\) keypoints"):
        pack.embed([(image, np.zeros((4, 2), dtype=np.float32))])


def test_get_face_pack_loads_once_per_configuration() -> None:
    # det_size 320 is used by no other test, so this really loads (concurrently) here.
    settings = Settings(face_pack_dir=FACE_PACK_DIR, face_det_size=320)
    results: list[FacePack] = []

    def worker() -> None:
        results.append(get_face_pack(settings))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert all(pack is results[0] for pack in results)
    assert results[0].det_size == 320
    assert get_face_pack(Settings(face_pack_dir=FACE_PACK_DIR, face_det_size=320)) is results[0]
    assert results[0].model_version == shared_pack().model_version
    # The smaller detector input still finds the one face of a portrait.
    assert len(results[0].detect(read_bgr(IDENTITIES_DIR / "obama" / "obama.jpg"))) == 1


def _constant_landmark_model(path: Path, landmarks_68: np.ndarray) -> None:
    """An ONNX graph shaped like InsightFace's 1k3d68 (1x3x192x192 in, 1x3309 out) that
    always predicts ``landmarks_68`` (in the model's normalised crop coordinates)."""
    from onnx import TensorProto, helper, numpy_helper

    output = np.zeros((1, 3309), dtype=np.float32)
    output[0, -68 * 3 :] = landmarks_68.astype(np.float32).ravel()
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["data"], ["mean"], name="mean", axes=[1, 2, 3]),
            helper.make_node("Reshape", ["mean", "shape"], ["flat"], name="flat"),
            helper.make_node("Mul", ["flat", "zero"], ["nothing"], name="times_zero"),
            helper.make_node("Add", ["nothing", "landmarks"], ["fc1"], name="constant"),
        ],
        "constant_landmarks",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 192, 192])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 3309])],
        initializer=[
            numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "shape"),
            numpy_helper.from_array(np.zeros((1, 1), dtype=np.float32), "zero"),
            numpy_helper.from_array(output, "landmarks"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_pose_comes_from_the_3d_landmark_model_when_the_pack_has_one(tmp_path: Path) -> None:
    from insightface.model_zoo.landmark import Landmark

    from workers.inference.pose import rotation_from_angles
    from workers.inference.quality import measure_quality

    folder = _copy_pack(tmp_path, DETECTOR_FILE, RECOGNIZER_FILE)
    # InsightFace's Landmark class carries the 68-point mean shape the pose is fitted to.
    probe = tmp_path / "probe.onnx"
    _constant_landmark_model(probe, np.zeros((68, 3)))
    mean_shape = np.asarray(Landmark(model_file=str(probe)).mean_lmk, dtype=np.float64)
    # Predict the mean shape turned by a known rotation, half size, in the crop's centre.
    pitch, yaw, roll = 10.0, 20.0, 5.0
    turned = (rotation_from_angles(pitch, yaw, roll) @ mean_shape.T).T * 0.5
    _constant_landmark_model(folder / "1k3d68.onnx", turned)

    pack = FacePack.load(folder)
    assert pack.has_landmark_3d
    assert pack.model_files["landmark_3d_68"].name == "1k3d68.onnx"
    # The 3D model does not change embeddings, so it does not change the version.
    assert pack.model_version == shared_pack().model_version

    image = read_bgr(IDENTITIES_DIR / "obama" / "obama.jpg")
    (face,) = pack.detect(image)
    assert face.landmark_3d_68 is not None and face.landmark_3d_68.shape == (68, 3)
    assert face.pose is not None and face.pose.source == "landmark_3d_68"
    assert (face.pose.pitch, face.pose.yaw, face.pose.roll) == pytest.approx(
        (pitch, yaw, roll), abs=0.1
    )
    metrics = measure_quality(image, face)
    assert metrics.pose_source == "landmark_3d_68"
    assert metrics.yaw == pytest.approx(yaw, abs=0.1)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_a_smaller_detector_input_finds_the_same_face_in_portraits() -> None:
    """Probes may be detected at 320: the face, its box and its embedding barely move."""
    import cv2

    pack = shared_pack()
    for path in sorted(IDENTITIES_DIR.glob("*/*")):
        image = cv2.imread(str(path))
        full = pack.detect(image)
        small = pack.detect(image, det_size=320)
        if len(full) != 1:
            continue  # group shots and tiny faces are not what a probe size is for
        assert len(small) == 1, path
        assert _iou(full[0].bbox, small[0].bbox) > 0.85, path
        a, b = pack.embed([(image, full[0].kps), (image, small[0].kps)])
        assert float(a @ b) > 0.9, path


def test_the_detector_input_side_must_be_a_multiple_of_32() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        shared_pack().detect(np.zeros((64, 64, 3), dtype=np.uint8), det_size=300)
