"""Model calls of concurrent jobs merged into batches, each caller getting its own rows."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from helpers_faces import IDENTITIES_DIR, shared_pack

from shared.paths import minifasnet_dir
from workers.inference.batcher import MicroBatcher
from workers.inference.liveness import LivenessScorer


def _recording(sizes: list[int]):  # type: ignore[no-untyped-def]
    lock = threading.Lock()

    def run(items: list[int]) -> list[int]:
        with lock:
            sizes.append(len(items))
        return [item * 10 for item in items]

    return run


def test_concurrent_calls_share_runs_and_get_their_own_results() -> None:
    sizes: list[int] = []
    batcher = MicroBatcher("t", _recording(sizes), max_batch=16, max_wait_s=0.05)
    barrier = threading.Barrier(8)

    def call(i: int) -> list[int]:
        barrier.wait()
        return batcher([i, i + 100])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(8)))
    assert results == [[i * 10, (i + 100) * 10] for i in range(8)]
    assert sum(sizes) == 16 and len(sizes) < 8  # merged across callers
    assert max(sizes) <= 16


def test_runs_never_exceed_the_largest_batch() -> None:
    sizes: list[int] = []
    batcher = MicroBatcher("t", _recording(sizes), max_batch=3, max_wait_s=0.05)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: batcher([i] * 5), range(4)))
    assert results == [[i * 10] * 5 for i in range(4)]
    assert max(sizes) <= 3


def test_an_error_reaches_every_caller_of_that_run() -> None:
    def broken(items: list[int]) -> list[int]:
        raise RuntimeError("model failed")

    batcher = MicroBatcher("t", broken, max_batch=8, max_wait_s=0.01)
    with pytest.raises(RuntimeError, match="model failed"):
        batcher([1])
    assert batcher([]) == []


def test_a_batch_of_one_runs_in_the_caller() -> None:
    seen: list[str] = []

    def run(items: list[int]) -> list[int]:
        seen.append(threading.current_thread().name)
        return items

    assert MicroBatcher("t", run, max_batch=1, max_wait_s=1.0)([1, 2]) == [1, 2]
    assert seen == [threading.current_thread().name]


def _faces() -> list[tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]]:
    pack = shared_pack()
    out = []
    for path in sorted(IDENTITIES_DIR.glob("*/*"))[:8]:
        image = cv2.imread(str(path))
        faces = pack.detect(image)
        if faces:
            out.append((image, faces[0].kps, faces[0].bbox))
    return out


def test_batched_embeddings_equal_one_by_one() -> None:
    import copy

    faces = _faces()
    pack = shared_pack()
    single = [pack.embed([(image, kps)])[0] for image, kps, _ in faces]
    batched_pack = copy.copy(pack)
    batched_pack.enable_batching(
        lambda name, run: MicroBatcher(name, run, max_batch=32, max_wait_s=0.05)
    )
    with ThreadPoolExecutor(len(faces)) as pool:
        batched = list(pool.map(lambda f: batched_pack.embed([(f[0], f[1])])[0], faces))
    assert np.max(np.abs(np.stack(single) - np.stack(batched))) < 1e-5


def test_batched_liveness_scores_equal_one_by_one() -> None:
    faces = _faces()
    scorer = LivenessScorer.load(minifasnet_dir())
    single = [scorer.score(image, [bbox])[0].spoof_score for image, _, bbox in faces]
    scorer.enable_batching(lambda name, run: MicroBatcher(name, run, max_batch=32, max_wait_s=0.05))
    with ThreadPoolExecutor(len(faces)) as pool:
        batched = list(pool.map(lambda f: scorer.score(f[0], [f[2]])[0].spoof_score, faces))
    assert np.allclose(single, batched, atol=1e-5)
