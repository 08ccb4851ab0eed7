"""Genuine and impostor similarity scores from per-person embeddings.

Scores are cosine similarities of L2-normalised embeddings (a plain dot product),
computed in float64 so that percentiles and error rates do not depend on float32
rounding. Every score carries the pair it came from, as two indices into a flat item
list (images, or person templates for the mean-template variant), so a report can
point at the photos behind a surprising score without storing names per pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Embedding norms further than this from 1 mean the caller forgot to normalise
# (raw ArcFace outputs have norms around 10-30), not float32 rounding.
_NORM_TOLERANCE = 1e-3
# Elements per matrix-product block (64 MiB of float64): bounds the (rows x items)
# temporaries when enumerating all cross-person pairs.
_BLOCK_ELEMENTS = 1 << 23
# Pairs per gather when scoring sampled pairs: bounds the (pairs x d) temporaries.
_CHUNK_PAIRS = 1 << 16


@dataclass(frozen=True)
class PairScores:
    """Scores and, row for row, the ``(left, right)`` item indices they compare."""

    scores: FloatArray
    pairs: IntArray  # shape (n, 2), left < right

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass(frozen=True)
class CalibrationScores:
    """Everything calibration needs from the embeddings.

    ``items`` names each image (``person/file`` for a directory); genuine and impostor
    pairs index into it. ``persons`` names the templates that the mean-template pairs
    index into. ``impostor_sampled`` is true when ``max_pairs`` capped the impostor set.
    """

    persons: list[str]
    items: list[str]
    item_person: IntArray  # person index of each item
    genuine: PairScores
    impostor: PairScores
    mean_template_impostor: PairScores
    impostor_total_pairs: int
    mean_template_total_pairs: int

    @property
    def impostor_sampled(self) -> bool:
        return len(self.impostor) < self.impostor_total_pairs


def l2_normalise(vectors: npt.ArrayLike) -> FloatArray:
    """Rows scaled to unit length; raises on zero or non-finite rows."""
    arr = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0.0):
        raise ValueError("cannot normalise a zero or non-finite embedding")
    return np.asarray(arr / norms, dtype=np.float64)


def compute_scores(
    embeddings_by_person: Mapping[str, npt.ArrayLike],
    *,
    item_names: Mapping[str, Sequence[str]] | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
) -> CalibrationScores:
    """Genuine, impostor and mean-template impostor scores.

    ``embeddings_by_person`` maps a person to an ``(n_i, d)`` array of L2-normalised
    embeddings (persons with ``n_i == 0`` are dropped). ``item_names`` optionally names
    each row (default ``person/index``). Genuine pairs are every ``i < j`` within a
    person; impostor pairs every pair of images of different persons; mean-template pairs
    every pair of persons, comparing the L2-normalised mean of each person's embeddings.

    The cross-person sets grow quadratically (30k images give 450M pairs), so
    ``max_pairs`` caps each of them with a uniform sample without replacement drawn with
    ``seed``; genuine pairs are never sampled. Sampled pairs keep ascending pair order.
    """
    persons, matrices = _validated(embeddings_by_person)
    names = _item_names(persons, matrices, item_names)
    sizes = np.array([m.shape[0] for m in matrices], dtype=np.int64)
    all_embeddings = np.concatenate(matrices, axis=0)
    item_person = np.repeat(np.arange(len(persons), dtype=np.int64), sizes)
    rng = np.random.default_rng(seed)

    genuine = _genuine_pairs(matrices, sizes)
    impostor, impostor_total = _cross_group_pairs(all_embeddings, sizes, max_pairs, rng)
    templates = l2_normalise(np.stack([m.mean(axis=0) for m in matrices]))
    template_sizes = np.ones(len(persons), dtype=np.int64)
    mean_template, mean_total = _cross_group_pairs(templates, template_sizes, max_pairs, rng)
    return CalibrationScores(
        persons=persons,
        items=names,
        item_person=item_person,
        genuine=genuine,
        impostor=impostor,
        mean_template_impostor=mean_template,
        impostor_total_pairs=impostor_total,
        mean_template_total_pairs=mean_total,
    )


def _validated(
    embeddings_by_person: Mapping[str, npt.ArrayLike],
) -> tuple[list[str], list[FloatArray]]:
    persons: list[str] = []
    matrices: list[FloatArray] = []
    dim: int | None = None
    for person, raw in embeddings_by_person.items():
        arr = np.asarray(raw, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"embeddings of {person!r} must be 2-D (n, d), got {arr.shape}")
        if arr.shape[0] == 0:
            continue
        if dim is None:
            dim = int(arr.shape[1])
        elif arr.shape[1] != dim:
            raise ValueError(f"embeddings of {person!r} have dimension {arr.shape[1]}, not {dim}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"embeddings of {person!r} contain non-finite values")
        norms = np.linalg.norm(arr, axis=1)
        if np.any(np.abs(norms - 1.0) > _NORM_TOLERANCE):
            raise ValueError(f"embeddings of {person!r} are not L2-normalised")
        persons.append(person)
        matrices.append(arr)
    if not persons:
        raise ValueError("no embeddings given")
    return persons, matrices


def _item_names(
    persons: list[str],
    matrices: list[FloatArray],
    item_names: Mapping[str, Sequence[str]] | None,
) -> list[str]:
    names: list[str] = []
    for person, matrix in zip(persons, matrices, strict=True):
        given = None if item_names is None else item_names.get(person)
        if given is None:
            names.extend(f"{person}/{i}" for i in range(matrix.shape[0]))
        elif len(given) != matrix.shape[0]:
            raise ValueError(
                f"{person!r} has {matrix.shape[0]} embeddings but {len(given)} item names"
            )
        else:
            names.extend(given)
    return names


def _genuine_pairs(matrices: list[FloatArray], sizes: IntArray) -> PairScores:
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    score_parts: list[FloatArray] = []
    pair_parts: list[IntArray] = []
    for matrix, offset in zip(matrices, offsets, strict=True):
        rows, cols = np.triu_indices(matrix.shape[0], k=1)
        gram = matrix @ matrix.T
        score_parts.append(np.asarray(gram[rows, cols], dtype=np.float64))
        pair_parts.append(np.stack([rows + offset, cols + offset], axis=1).astype(np.int64))
    return _joined(score_parts, pair_parts)


def _cross_group_pairs(
    embeddings: FloatArray,
    group_sizes: IntArray,
    max_pairs: int | None,
    rng: np.random.Generator,
) -> tuple[PairScores, int]:
    """Scores of item pairs ``i < j`` in different groups (items are ordered by group).

    Ordered by ``(i, j)``, item ``i`` pairs with every item after the end of its own group,
    so pair number ``k`` maps back to ``(i, j)`` through a cumulative count: that lets the
    sampler draw pair numbers without ever materialising the full pair list.
    """
    group_end = np.repeat(np.cumsum(group_sizes), group_sizes)  # exclusive end per item
    partners = embeddings.shape[0] - group_end  # cross-group partners after each item
    total = int(partners.sum())
    if max_pairs is not None and max_pairs < 0:
        raise ValueError("max_pairs must be >= 0")
    if max_pairs is None or total <= max_pairs:
        return _all_cross_pairs(embeddings, group_end), total
    chosen = np.sort(rng.choice(total, size=max_pairs, replace=False)).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(partners)[:-1]])
    left = np.searchsorted(starts, chosen, side="right") - 1
    right = group_end[left] + (chosen - starts[left])
    return _scored_pairs(embeddings, left.astype(np.int64), right.astype(np.int64)), total


def _all_cross_pairs(embeddings: FloatArray, group_end: IntArray) -> PairScores:
    n = embeddings.shape[0]
    chunk_rows = max(1, _BLOCK_ELEMENTS // max(n, 1))
    score_parts: list[FloatArray] = []
    pair_parts: list[IntArray] = []
    for lo in range(0, n, chunk_rows):
        hi = min(lo + chunk_rows, n)
        first_partner = int(group_end[lo:hi].min())
        if first_partner >= n:
            continue
        block = embeddings[lo:hi] @ embeddings[first_partner:].T
        cols = np.arange(first_partner, n, dtype=np.int64)
        # Items are grouped, so a row's valid partners are exactly the columns from its
        # own group's end onwards.
        mask = cols[None, :] >= group_end[lo:hi, None]
        rows_idx, cols_idx = np.nonzero(mask)
        score_parts.append(np.asarray(block[rows_idx, cols_idx], dtype=np.float64))
        pair_parts.append(
            np.stack([rows_idx + lo, cols_idx + first_partner], axis=1).astype(np.int64)
        )
    return _joined(score_parts, pair_parts)


def _scored_pairs(embeddings: FloatArray, left: IntArray, right: IntArray) -> PairScores:
    scores = np.empty(left.shape[0], dtype=np.float64)
    for lo in range(0, left.shape[0], _CHUNK_PAIRS):
        hi = lo + _CHUNK_PAIRS
        scores[lo:hi] = np.einsum("ij,ij->i", embeddings[left[lo:hi]], embeddings[right[lo:hi]])
    return PairScores(scores=scores, pairs=np.stack([left, right], axis=1))


def _joined(score_parts: list[FloatArray], pair_parts: list[IntArray]) -> PairScores:
    if not score_parts:
        return PairScores(
            scores=np.empty(0, dtype=np.float64), pairs=np.empty((0, 2), dtype=np.int64)
        )
    return PairScores(scores=np.concatenate(score_parts), pairs=np.concatenate(pair_parts))
