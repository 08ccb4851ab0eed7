"""Calibrate from a directory holding one folder of photos per person.

Embedding is injected (``embed_image``) so that this module stays numpy-only: the CLI
passes a function built on the worker's detector / quality gate / recognizer, tests pass
a synthetic one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from shared.calibration.report import CalibrationReport, SkippedImage, build_report
from shared.calibration.thresholds import DEFAULT_FMR_TARGETS, FallbackStrategy
from shared.errors import ErrorCode, FaceauthError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})  # what the decoder accepts


@dataclass(frozen=True)
class SkipImage:
    """What an embedder returns for an unusable image when it can say why.

    ``codes`` lists every reason code when there are several (a quality gate reports all
    its failed checks); ``code`` is the first.
    """

    reason: str
    code: str | None = None
    codes: tuple[str, ...] = ()


EmbedResult = npt.NDArray[np.floating] | SkipImage | None
# ``Callable[[Path], np.ndarray | None]`` is accepted too: return types are covariant.
ImageEmbedder = Callable[[Path], EmbedResult]


def calibrate_directory(
    root: Path,
    embed_image: ImageEmbedder,
    *,
    model_name: str,
    model_version: str,
    progress: bool = True,
    fmr_targets: Sequence[float] = DEFAULT_FMR_TARGETS,
    fallback: FallbackStrategy = FallbackStrategy.SWAP,
    max_pairs: int | None = None,
) -> CalibrationReport:
    """Embed every photo under ``root/<person>/`` and build a calibration report.

    ``embed_image`` returns one embedding for a usable image (normalised here, so a raw
    recognizer output is fine), or ``None`` / ``SkipImage(reason)`` for an unusable one;
    a non-transient ``FaceauthError`` it raises (undecodable image, quality rejection,
    no face) also marks the image as skipped with the error's code. Other exceptions,
    transient errors included, propagate: they are faults, not properties of the photo.
    Files outside person folders and non-image files are recorded as skipped, hidden
    entries (``.DS_Store``) are ignored.

    Every image file in a person folder is an acquisition attempt: the ones skipped by
    ``embed_image`` are failures to acquire, reported by reason with the generalized FNMR
    (``CalibrationReport.failure_to_acquire``).
    """
    if not root.is_dir():
        raise FaceauthError(
            ErrorCode.INVALID_PAYLOAD, f"calibration directory not found: {root}", path=str(root)
        )
    images, skipped = _discover(root)
    embeddings: dict[str, list[npt.NDArray[np.float64]]] = {}
    names: dict[str, list[str]] = {}
    for person, path in tqdm(images, desc="calibrate", unit="img", disable=not progress):
        item = path.relative_to(root).as_posix()
        outcome = _embed(embed_image, path)
        if isinstance(outcome, SkipImage):
            logger.info("calibration skips %s: %s", item, outcome.reason)
            codes = list(outcome.codes) or ([outcome.code] if outcome.code else [])
            skipped.append(
                SkippedImage(
                    item=item, reason=outcome.reason, code=outcome.code, codes=codes, attempted=True
                )
            )
            continue
        embeddings.setdefault(person, []).append(outcome)
        names.setdefault(person, []).append(item)
    return build_report(
        {person: np.stack(rows) for person, rows in embeddings.items()},
        model_name=model_name,
        model_version=model_version,
        item_names=names,
        skipped=skipped,
        source=str(root),
        fmr_targets=fmr_targets,
        fallback=fallback,
        max_pairs=max_pairs,
        acquisition_attempts=len(images),
    )


def _discover(root: Path) -> tuple[list[tuple[str, Path]], list[SkippedImage]]:
    """Image files per person folder, sorted so reports are reproducible."""
    images: list[tuple[str, Path]] = []
    skipped: list[SkippedImage] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            skipped.append(_skip(root, entry, "not inside a person folder"))
            continue
        for path in sorted(entry.rglob("*")):
            rel_parts = path.relative_to(entry).parts
            if any(part.startswith(".") for part in rel_parts) or path.is_dir():
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(_skip(root, path, f"not an image file ({path.suffix or 'none'})"))
                continue
            images.append((entry.name, path))
    return images, skipped


def _embed(embed_image: ImageEmbedder, path: Path) -> npt.NDArray[np.float64] | SkipImage:
    try:
        result = embed_image(path)
    except FaceauthError as exc:
        if exc.transient:
            raise
        return SkipImage(reason=exc.message, code=str(exc.code))
    if result is None:
        return SkipImage(reason="no usable face")
    if isinstance(result, SkipImage):
        return result
    vector = np.asarray(result, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(vector))
    if vector.size == 0 or not np.isfinite(norm) or norm == 0.0:
        return SkipImage(reason="embedder returned an empty, zero or non-finite embedding")
    return vector / norm


def _skip(root: Path, path: Path, reason: str) -> SkippedImage:
    return SkippedImage(item=path.relative_to(root).as_posix(), reason=reason)
