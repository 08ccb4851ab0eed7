"""Liveness (presentation-attack) scoring of detected faces with a deployed ONNX model.

The model folder is described by ``shared.liveness_spec.LivenessSpec``; nothing here
knows which network it runs. Each member model gets its own context crop of every face,
normalised as its spec says; all faces of a call go through one ``session.run`` per
member. The spoof score is ``1 - mean(live probability over members)``: 1 means spoof.

Load a scorer once per worker process (``LivenessScorer.load``) and reuse it: sessions
are thread-safe for ``run`` and loading costs far more than scoring.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from shared.errors import ErrorCode, ModelLoadError
from shared.face_crop import BBox, crop_face
from shared.liveness_spec import LivenessMember, LivenessSpec
from workers.inference.onnx_session import DEFAULT_MAX_BATCH, OrtSession, create_session

log = logging.getLogger(__name__)

ImageArray = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float32]

_SHA_CHARS = 12  # enough to tell two deployed builds apart in stored scores


@dataclass(frozen=True, slots=True)
class MemberScore:
    """One ensemble member's verdict on one face."""

    file: str
    live_probability: float


@dataclass(frozen=True, slots=True)
class LivenessScore:
    """The liveness verdict on one face; stored with the model that produced it."""

    spoof_score: float  # 1 - live_probability, in [0, 1]; 1 = spoof
    live_probability: float  # mean over members
    members: tuple[MemberScore, ...]
    model_name: str
    model_version: str

    def is_spoof(self, threshold: float) -> bool:
        """True when the face is refused: the spoof score is above ``threshold``."""
        return self.spoof_score > threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "spoof_score": self.spoof_score,
            "live_probability": self.live_probability,
            "members": [
                {"file": m.file, "live_probability": m.live_probability} for m in self.members
            ],
            "model_name": self.model_name,
            "model_version": self.model_version,
        }


@dataclass(frozen=True)
class _Member:
    spec: LivenessMember
    session: OrtSession


class LivenessScorer:
    """A loaded liveness model: spec, one ONNX session per member, and its identity."""

    def __init__(
        self,
        spec: LivenessSpec,
        folder: Path,
        members: Sequence[_Member],
        version: str,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.spec = spec
        self.folder = folder
        self._members = tuple(members)
        self._version = version
        self._max_batch = max_batch
        self._batcher: Callable[[list[Any]], Sequence[tuple[FloatArray, ...]]] | None = None

    # --- identity -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        """Spec version plus a short digest of the ONNX bytes, e.g. ``2020.1+3f2a9c0d1e4b``.

        The digest makes a retrained file under an unchanged spec version visible in the
        stored scores.
        """
        return self._version

    @property
    def default_threshold(self) -> float | None:
        return self.spec.default_threshold

    @property
    def providers(self) -> list[str]:
        """Providers of the first member (all members are created with the same request)."""
        return list(self._members[0].session.providers)

    @property
    def member_files(self) -> tuple[str, ...]:
        return tuple(m.spec.file for m in self._members)

    # --- loading --------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        providers: Sequence[str] | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> LivenessScorer:
        """Load and check the model in ``folder``; raises ``ModelLoadError`` when unusable.

        Every member is run once on a blank batch, so a wrong input size or a missing live
        class fails here, at worker start, rather than on the first request.
        """
        folder = Path(folder)
        spec = LivenessSpec.load(folder)
        members = []
        for member in spec.members:
            path = folder / member.file
            session = create_session(
                path,
                providers=providers,
                error_code=ErrorCode.LIVENESS_MODEL_INVALID,
                open_batch=True,
                label=f"liveness member {path}",
            )
            _check_member(folder, member, session)
            members.append(_Member(spec=member, session=session))
        version = f"{spec.version}+{_files_digest(folder, spec)[:_SHA_CHARS]}"
        scorer = cls(spec, folder, members, version, max_batch=max_batch)
        log.info(
            "liveness model %s %s: %d member(s), providers %s, batching %s",
            scorer.name,
            scorer.version,
            len(members),
            scorer.providers,
            ["any" if m.session.fixed_batch is None else "one-by-one" for m in members],
        )
        return scorer

    # --- scoring --------------------------------------------------------------------------

    def score(self, image_bgr: ImageArray, bboxes: Sequence[BBox]) -> list[LivenessScore]:
        """Score every face box of one BGR image, in the order given.

        A box is ``x1, y1, x2, y2`` in pixels; extra trailing values (a detector's score
        column) are ignored.
        """
        return self.score_many([(image_bgr, bbox) for bbox in bboxes])

    def score_many(self, items: Sequence[tuple[ImageArray, BBox]]) -> list[LivenessScore]:
        """Score faces from any number of images; one ``session.run`` per member per batch."""
        if not items:
            return []
        inputs = self.model_inputs(items)
        if self._batcher is None:
            logits = self.run_model(inputs)
        else:
            # One face = one row per member; the batcher joins faces of other jobs.
            faces = [tuple(x[i] for x in inputs) for i in range(len(items))]
            rows = self._batcher(faces)
            logits = [np.stack([row[m] for row in rows]) for m in range(len(self._members))]
        live = np.stack(
            [
                _softmax(out)[:, member.spec.live_class_index]
                for member, out in zip(self._members, logits, strict=True)
            ],
            axis=1,
        )
        files = self.member_files
        results = []
        for row in live:
            live_probability = float(row.mean())
            results.append(
                LivenessScore(
                    spoof_score=float(min(max(1.0 - live_probability, 0.0), 1.0)),
                    live_probability=live_probability,
                    members=tuple(
                        MemberScore(file=f, live_probability=float(p))
                        for f, p in zip(files, row, strict=True)
                    ),
                    model_name=self.name,
                    model_version=self.version,
                )
            )
        return results

    def enable_batching(self, make: Callable[[str, Callable[[list[Any]], Any]], Any]) -> None:
        """Run the members through a batcher shared by the jobs in flight in this process."""
        self._batcher = make(f"liveness:{self.name}", self._run_faces)

    def _run_faces(self, faces: list[tuple[FloatArray, ...]]) -> list[tuple[FloatArray, ...]]:
        """Per-face rows of every member -> per-face logits of every member."""
        stacked = [np.stack([face[m] for face in faces]) for m in range(len(self._members))]
        logits = self.run_model(stacked)
        return [tuple(out[i] for out in logits) for i in range(len(faces))]

    def model_inputs(self, items: Sequence[tuple[ImageArray, BBox]]) -> list[FloatArray]:
        """One NCHW float32 batch per member for these faces (crop, colour order, normalise)."""
        images = [_as_bgr(image) for image, _ in items]
        boxes = [_box4(bbox) for _, bbox in items]
        return [prepare_batch(m.spec, images, boxes) for m in self._members]

    def run_model(self, inputs: Sequence[FloatArray]) -> list[FloatArray]:
        """Raw logits (N, C) per member for ``model_inputs``' output."""
        return [
            m.session.run(x, max_batch=self._max_batch)
            for m, x in zip(self._members, inputs, strict=True)
        ]


def prepare_batch(
    member: LivenessMember, images_bgr: Sequence[ImageArray], boxes: Sequence[BBox]
) -> FloatArray:
    """The member's NCHW float32 input for these faces of BGR images.

    Each face is cropped as the member says (``crop_scale``, ``square``, ``crop_shift``).
    ``x = (pixel * pixel_scale - mean) / std`` per channel after the crop is put in the
    member's colour order. Public so training can check it feeds its exported model the
    same tensors as serving.
    """
    size = (member.input_width, member.input_height)
    crops = np.stack(
        [
            crop_face(
                image,
                box,
                member.crop_scale,
                size,
                square=member.square,
                shift=member.crop_shift,
            )
            for image, box in zip(images_bgr, boxes, strict=True)
        ]
    )
    if member.color_order == "RGB":
        crops = crops[..., ::-1]
    mean = np.asarray(member.mean, dtype=np.float32)
    std = np.asarray(member.std, dtype=np.float32)
    x = crops.astype(np.float32) * np.float32(member.pixel_scale)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def _check_member(folder: Path, member: LivenessMember, session: OrtSession) -> None:
    """Input layout matches the spec and a blank face yields (1, C) logits with the live class."""

    def fail(why: str) -> ModelLoadError:
        return ModelLoadError(
            ErrorCode.LIVENESS_MODEL_INVALID,
            f"liveness model folder {folder}: member {member.file}: {why}",
            folder=str(folder),
            member=member.file,
        )

    shape = session.session.get_inputs()[0].shape
    expected = [3, member.input_height, member.input_width]
    if len(shape) != 4:
        raise fail(f"expected an NCHW input, model input has shape {shape}")
    for got, want in zip(shape[1:], expected, strict=True):
        if isinstance(got, int) and got != want:
            raise fail(f"spec says input (N, {', '.join(map(str, expected))}), model has {shape}")
    blank = np.zeros((1, *expected), dtype=np.float32)
    try:
        out = session.run(blank)
    except Exception as exc:  # an ORT shape error on the probe means a spec/model mismatch
        raise fail(f"test run failed ({exc})") from exc
    if out.ndim != 2 or out.shape[0] != 1 or out.shape[1] <= member.live_class_index:
        raise fail(
            f"expected logits (N, C) with C > live_class_index={member.live_class_index}, "
            f"got shape {out.shape}"
        )


def _files_digest(folder: Path, spec: LivenessSpec) -> str:
    digest = hashlib.sha256()
    for member in spec.members:
        with (folder / member.file).open("rb") as fh:
            file_hash = hashlib.file_digest(fh, "sha256")
        digest.update(member.file.encode() + b"\0" + file_hash.digest())
    return digest.hexdigest()


def _softmax(logits: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


def _as_bgr(image: ImageArray) -> ImageArray:
    """3-channel uint8 BGR; grey and BGRA inputs are converted, anything else refused."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), dtype=np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an H x W x 3 BGR image, got shape {image.shape}")


def _box4(bbox: BBox) -> tuple[float, float, float, float]:
    if len(bbox) < 4:
        raise ValueError(f"a face box needs x1, y1, x2, y2; got {len(bbox)} values")
    x1, y1, x2, y2 = (float(v) for v in bbox[:4])
    if not all(np.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        raise ValueError(f"invalid face box {(x1, y1, x2, y2)}")
    return x1, y1, x2, y2
