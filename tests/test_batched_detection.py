"""Detection batched across images gives what InsightFace's one-image SCRFD gives."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from helpers_faces import EDGE_DIR, FACE_PACK_DIR, FACES_DIR, read_bgr

from workers.inference.batched_detection import BatchedDetector, letterbox
from workers.inference.batcher import MicroBatcher
from workers.inference.face_pack import DetectedFace, FacePack

# SCRFD heads are the same arithmetic in a batch as alone; ORT may pick other kernels for
# another batch shape, so allow float noise, far below a pixel or a score step that matters.
BOX_ATOL_PX = 0.05
SCORE_ATOL = 1e-4


def _photos() -> list[Path]:
    exts = {".jpg", ".jpeg", ".png"}
    folders = [FACES_DIR / "identities", FACES_DIR / "group", EDGE_DIR]
    paths = sorted(p for f in folders for p in f.rglob("*") if p.suffix.lower() in exts)
    return [p for p in paths if _readable(p)]


def _readable(path: Path) -> bool:
    try:
        read_bgr(path)
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def pack() -> FacePack:
    return FacePack.load(FACE_PACK_DIR)


@pytest.fixture(scope="module")
def batched(pack: FacePack) -> BatchedDetector:
    opened = BatchedDetector.open(pack._detector, ["CPUExecutionProvider"])
    assert opened is not None, "the test pack's det_500m must open for batches"
    return opened


@pytest.fixture(scope="module")
def images() -> dict[str, npt.NDArray[np.uint8]]:
    photos = _photos()
    assert len(photos) >= 20
    return {p.name + str(i): read_bgr(p) for i, p in enumerate(photos)}


def _assert_same(
    got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray], name: str
) -> None:
    (boxes, kps), (ref_boxes, ref_kps) = got, want
    assert boxes.shape == ref_boxes.shape, name
    np.testing.assert_allclose(boxes[:, :4], ref_boxes[:, :4], atol=BOX_ATOL_PX, err_msg=name)
    np.testing.assert_allclose(boxes[:, 4], ref_boxes[:, 4], atol=SCORE_ATOL, err_msg=name)
    np.testing.assert_allclose(kps, ref_kps, atol=BOX_ATOL_PX, err_msg=name)


@pytest.mark.parametrize("size", [640, 320])
def test_a_batch_of_all_sample_photos_detects_what_one_image_runs_detect(
    pack: FacePack,
    batched: BatchedDetector,
    images: dict[str, npt.NDArray[np.uint8]],
    size: int,
) -> None:
    detector = pack._detector
    boxed = {name: letterbox(image, size) for name, image in images.items()}
    names = list(images)
    outputs = batched.run([boxed[n].tile for n in names])  # every photo in one run
    faces_seen = 0
    for name, out in zip(names, outputs, strict=True):
        want = detector.detect(images[name], input_size=(size, size), max_num=0)
        _assert_same(batched.decode(out, boxed[name]), want, name)
        faces_seen += want[0].shape[0]
    assert faces_seen >= len(names)  # the comparison covered real faces, not empty outputs


def test_max_num_picks_the_faces_insightface_picks(
    pack: FacePack, batched: BatchedDetector, images: dict[str, npt.NDArray[np.uint8]]
) -> None:
    groups = {n: img for n, img in images.items() if "two_people" in n or "obama_and" in n}
    assert groups
    for name, image in groups.items():
        boxed = letterbox(image, 640)
        (out,) = batched.run([boxed.tile])
        want = pack._detector.detect(image, input_size=(640, 640), max_num=1)
        _assert_same(batched.decode(out, boxed, max_num=1), want, name)


def test_the_pack_batches_detection_across_threads_with_identical_faces(
    images: dict[str, npt.NDArray[np.uint8]],
) -> None:
    plain = FacePack.load(FACE_PACK_DIR)
    shared = FacePack.load(FACE_PACK_DIR)
    runs: list[tuple[str, int]] = []

    def make(name: str, run: Callable[[list[Any]], Sequence[Any]]) -> MicroBatcher[Any, Any]:
        return MicroBatcher(
            name, run, max_batch=8, max_wait_s=0.05, observe=lambda n, k: runs.append((n, k))
        )

    shared.enable_batching(make)
    names = list(images)[:16]
    results: dict[str, list[DetectedFace]] = {}
    start = threading.Barrier(len(names))

    def job(name: str) -> None:
        start.wait()
        results[name] = shared.detect(images[name], det_size=320)

    threads = [threading.Thread(target=job, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    detector_runs = [k for n, k in runs if n.startswith("detector:320:")]
    assert sum(detector_runs) == len(names)
    assert max(detector_runs) > 1  # images of several threads shared one graph run
    for name in names:
        want = plain.detect(images[name], det_size=320)
        got = results[name]
        assert len(got) == len(want), name
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g.bbox, w.bbox, atol=BOX_ATOL_PX)
            assert g.det_score == pytest.approx(w.det_score, abs=SCORE_ATOL)
            np.testing.assert_allclose(g.kps, w.kps, atol=BOX_ATOL_PX)
            assert (g.pose is None) == (w.pose is None)
            if g.pose is not None and w.pose is not None:
                got_pose = (g.pose.yaw, g.pose.pitch, g.pose.roll)
                assert got_pose == pytest.approx((w.pose.yaw, w.pose.pitch, w.pose.roll), abs=0.05)


def test_letterbox_keeps_the_aspect_ratio_and_pads_bottom_right() -> None:
    tall = np.full((400, 200, 3), 200, dtype=np.uint8)
    boxed = letterbox(tall, 320)
    assert boxed.tile.shape == (320, 320, 3)
    assert boxed.scale == pytest.approx(0.8)
    assert boxed.tile[:, 160:].max() == 0 and boxed.tile[:, :160].min() == 200
