"""SCRFD face detection over several images in one model run.

InsightFace's ``SCRFD.detect`` runs one image at a time: it letterboxes the image into
the detector's square input (scaled to fit, placed top-left, zero padding), runs the
graph and decodes anchors, scores and keypoints. Here the letterboxing and the decoding
are the same steps, split so that the jobs in flight in one worker process share the
graph run in the middle:

1. ``letterbox`` (in the job's own thread): every image becomes a ``size`` x ``size``
   tile, so a batch of images is one tensor;
2. ``run`` (in the batcher's thread): one ``session.run`` over the stacked tiles;
3. ``decode`` (back in the job's thread): InsightFace's anchor decoding, its NMS and its
   ``max_num`` selection, on that image's slice of the outputs.

The graph must take a batch: exports with batch 1 (the test pack's det_500m, buffalo_l's
det_10g) are opened by ``onnx_batch.open_batch(split_flattened_heads=True)``, and
``BatchedDetector.open`` compares batched outputs with batch-1 outputs of the original
graph before it is trusted; a graph that fails the check is simply run one image at a
time by InsightFace as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from workers.inference.onnx_session import OrtSession, create_session

log = logging.getLogger(__name__)

ImageBGR = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float32]

# Batched and batch-1 outputs of the opened graph must agree this closely (raw head values).
_PROBE_ATOL = 1e-4
_PROBE_SIZES = (160, 320)
_PROBE_BATCH = 3


@dataclass(frozen=True)
class Letterboxed:
    """One image fitted into the detector's square input, and the scale back to the image."""

    tile: ImageBGR  # (size, size, 3)
    scale: float  # tile pixels per image pixel
    image_shape: tuple[int, int]  # (height, width) of the original image


def letterbox(image: ImageBGR, size: int) -> Letterboxed:
    """InsightFace's SCRFD resize: keep the aspect ratio, fit inside, pad bottom/right."""
    height, width = image.shape[:2]
    if float(height) / width > 1.0:  # taller than the square input
        new_height = size
        new_width = int(new_height / (float(height) / width))
    else:
        new_width = size
        new_height = int(new_width * (float(height) / width))
    scale = float(new_height) / height
    tile = np.zeros((size, size, 3), dtype=np.uint8)
    tile[:new_height, :new_width, :] = cv2.resize(image, (new_width, new_height))
    return Letterboxed(tile=tile, scale=scale, image_shape=(height, width))


class BatchedDetector:
    """The pack's SCRFD graph opened for batches, decoding with the detector's own settings."""

    def __init__(self, detector: Any, session: OrtSession) -> None:
        self._detector = detector  # InsightFace's SCRFD: strides, anchors, thresholds, NMS
        self._session = session
        self._input_mean = float(detector.input_mean)
        self._input_std = float(detector.input_std)

    @classmethod
    def open(cls, detector: Any, providers: Sequence[str] | None) -> BatchedDetector | None:
        """A batched twin of ``detector``, or None when its graph cannot be opened safely."""
        import onnx

        from workers.inference.onnx_batch import open_batch

        path = Path(detector.model_file)
        try:
            original = onnx.load(str(path), load_external_data=False)
            dim0 = original.graph.input[0].type.tensor_type.shape.dim[0]
            if dim0.HasField("dim_value") and dim0.dim_value == 1:
                opened, _ = open_batch(original, split_flattened_heads=True)
                model: Path | bytes = bytes(opened.SerializeToString())
            else:
                model = path  # already takes any batch (e.g. a batched re-export)
            label = f"batched detector {path.name}"
            batched = cls(detector, create_session(model, providers=providers, label=label))
            single = create_session(path, providers=providers, label=f"detector {path.name}")
            batched._check_against(single)
        except Exception as exc:  # only costs speed: detection stays one image per run
            log.warning("detector %s: no batched runs (%s)", path.name, exc)
            return None
        log.info("detector %s: batch dimension opened for cross-job batching", path.name)
        return batched

    def _check_against(self, single: OrtSession) -> None:
        rng = np.random.default_rng(0)
        names = [o.name for o in single.session.get_outputs()]
        for size in _PROBE_SIZES:
            tiles = [
                rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(_PROBE_BATCH)
            ]
            batched = self.run(tiles)
            for i, tile in enumerate(tiles):
                outs = single.session.run(names, {single.input_name: self._blob([tile])})
                for got, want in zip(batched[i], outs, strict=True):
                    want = np.asarray(want)
                    want = want[0] if self._detector.batched else want
                    if got.shape != want.shape or not np.allclose(got, want, atol=_PROBE_ATOL):
                        raise ValueError("batched outputs differ from one-image outputs")

    def _blob(self, tiles: Sequence[ImageBGR]) -> FloatArray:
        size = tiles[0].shape[0]
        blob = cv2.dnn.blobFromImages(
            list(tiles),
            1.0 / self._input_std,
            (size, size),
            (self._input_mean, self._input_mean, self._input_mean),
            swapRB=True,
        )
        return np.ascontiguousarray(blob, dtype=np.float32)

    def run(self, tiles: Sequence[ImageBGR]) -> list[list[FloatArray]]:
        """One graph run over same-sized tiles; for each tile, its slice of every output."""
        if not tiles:
            return []
        outputs = self._session.session.run(None, {self._session.input_name: self._blob(tiles)})
        arrays = [np.asarray(o) for o in outputs]
        return [[a[i] for a in arrays] for i in range(len(tiles))]

    def decode(
        self, outputs: Sequence[FloatArray], boxed: Letterboxed, *, max_num: int = 0
    ) -> tuple[FloatArray, FloatArray]:
        """Boxes+scores (K, 5) and keypoints (K, 5, 2) in image pixels, as ``SCRFD.detect``.

        The steps and their order are InsightFace's (``SCRFD.forward``,
        ``_detect_candidates`` and ``detect``): per stride, anchor centres, scores at or
        above the detector's threshold, distance decoding; then a stable sort by score,
        the detector's NMS and its ``max_num`` pick (area minus centre offset).
        """
        from insightface.model_zoo.scrfd import distance2bbox, distance2kps

        det = self._detector
        threshold = float(det.det_thresh)
        size = boxed.tile.shape[0]
        fmc = det.fmc
        scores_list, bboxes_list, kpss_list = [], [], []
        for idx, stride in enumerate(det._feat_stride_fpn):
            scores = outputs[idx]
            bbox_preds = outputs[idx + fmc] * stride
            kps_preds = outputs[idx + fmc * 2] * stride
            centers = self._anchor_centers(size // stride, size // stride, stride)
            keep = np.where(scores >= threshold)[0]
            scores_list.append(scores[keep])
            bboxes_list.append(distance2bbox(centers, bbox_preds)[keep])
            kpss = distance2kps(centers, kps_preds)
            kpss_list.append(kpss.reshape((kpss.shape[0], -1, 2))[keep])
        if sum(s.size for s in scores_list) == 0:
            return np.empty((0, 5), dtype=np.float32), np.empty((0, 5, 2), dtype=np.float32)
        scores = np.vstack(scores_list)
        order = np.argsort(-scores.ravel(), kind="stable")
        bboxes = np.vstack(bboxes_list) / boxed.scale
        kpss = np.vstack(kpss_list) / boxed.scale
        pre_det = np.hstack((bboxes, scores)).astype(np.float32, copy=False)[order, :]
        kpss = kpss[order, :, :]
        # detect(): a second stable sort (a no-op for one input size), then NMS.
        order = np.argsort(-pre_det[:, 4], kind="stable")
        pre_det, kpss = pre_det[order, :], kpss[order, :, :]
        keep = det.nms(pre_det)
        found, kpss = pre_det[keep, :], kpss[keep, :, :]
        if max_num > 0 and found.shape[0] > max_num:
            area = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
            centre_y, centre_x = boxed.image_shape[0] // 2, boxed.image_shape[1] // 2
            offsets = np.vstack(
                [
                    (found[:, 0] + found[:, 2]) / 2 - centre_x,
                    (found[:, 1] + found[:, 3]) / 2 - centre_y,
                ]
            )
            values = area - np.sum(np.power(offsets, 2.0), 0) * 2.0
            pick = np.argsort(values)[::-1][:max_num]
            found, kpss = found[pick, :], kpss[pick, :]
        return found.astype(np.float32, copy=False), kpss.astype(np.float32, copy=False)

    def _anchor_centers(self, height: int, width: int, stride: int) -> FloatArray:
        det = self._detector
        key = (height, width, stride)
        cached = det.center_cache.get(key)
        if cached is not None:
            return np.asarray(cached)
        grid = np.mgrid[:height, :width]
        centers = np.stack([grid[1], grid[0]], axis=-1).astype(np.float32)  # (x, y) per cell
        centers = (centers * stride).reshape((-1, 2))
        if det._num_anchors > 1:
            centers = np.stack([centers] * det._num_anchors, axis=1).reshape((-1, 2))
        return centers
