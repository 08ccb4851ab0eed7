"""Decision thresholds and error rates from genuine and impostor score lists.

Conventions (verification accepts when ``score >= t``):

* ``FMR(t)``  = fraction of impostor scores ``>= t`` (impostors that would be accepted);
* ``FNMR(t)`` = fraction of genuine scores ``< t`` (genuine users who would be refused).

Percentiles use ``numpy.percentile(..., method="linear")`` (numpy's default, type 7 of
Hyndman & Fan): the prototype notebook called ``np.percentile`` with no method, so this
reproduces its numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

PERCENTILE_METHOD: Final = "linear"
T_LOW_IMPOSTOR_PERCENTILE = 99.0
T_HIGH_GENUINE_PERCENTILE = 10.0
DEFAULT_FMR_TARGETS: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
RULE = (
    f"t_low = P{T_LOW_IMPOSTOR_PERCENTILE:g}(impostor scores), "
    f"t_high = P{T_HIGH_GENUINE_PERCENTILE:g}(genuine scores), "
    f"numpy.percentile method={PERCENTILE_METHOD!r}"
)
# target * n is compared with integers; the slack absorbs binary rounding such as
# 1e-4 * 10_000 landing a hair below 1.
_COUNT_SLACK = 1e-9


class FallbackStrategy(StrEnum):
    """What to do when the rule gives ``t_low > t_high`` (the score distributions overlap).

    ``swap`` (default): accept at ``P99(impostor)`` and reject below ``P10(genuine)``, i.e.
    keep both of the rule's error-rate bounds (accepted impostors <= 1%, refused genuine
    users <= 10%) and send the overlap between them to the review band. Security-wise it
    never loosens the accept threshold below what the impostor data supports.
    ``eer``: both thresholds at the equal-error-rate threshold (no review band); simpler,
    but the accept side then admits EER-many impostors, which may be far above 1%.
    """

    SWAP = "swap"
    EER = "eer"


@dataclass(frozen=True)
class BandThresholds:
    """The reject / accept pair; ``raw_*`` are the rule's values before any fallback."""

    t_low: float
    t_high: float
    raw_t_low: float
    raw_t_high: float
    fallback_used: bool
    fallback_strategy: FallbackStrategy | None
    fallback_reason: str | None


@dataclass(frozen=True)
class FmrTargetResult:
    """The threshold for one target false-match rate and the rates it actually gives.

    ``supported`` is false when there are fewer than ``1 / target`` impostor pairs: the
    data cannot then show a rate that small, and ``threshold`` is only the empirical
    value (one step above the highest impostor score), or ``None`` with no impostors.
    """

    target: float
    threshold: float | None
    supported: bool
    reason: str | None
    fmr: float | None
    fnmr: float | None
    impostor_pairs: int


@dataclass(frozen=True)
class EerResult:
    eer: float
    threshold: float


@dataclass(frozen=True)
class OperatingPoint:
    name: str
    threshold: float
    fmr: float
    fnmr: float


@dataclass(frozen=True)
class DetCurve:
    """FMR and FNMR at every distinct score (plus one step above the highest)."""

    thresholds: FloatArray
    fmr: FloatArray
    fnmr: FloatArray


@dataclass(frozen=True)
class ThresholdSummary:
    band: BandThresholds
    fmr_targets: list[FmrTargetResult]
    eer: EerResult
    roc_auc: float
    operating_points: list[OperatingPoint]


def percentile(scores: npt.ArrayLike, q: float) -> float:
    """``q``-th percentile with the documented method."""
    return float(np.percentile(_scores(scores, "scores"), q, method=PERCENTILE_METHOD))


def fmr_at(impostor: npt.ArrayLike, threshold: float) -> float:
    """Fraction of impostor scores ``>= threshold``."""
    imp = np.sort(_scores(impostor, "impostor"))
    return float(_fmr_sorted(imp, np.array([threshold]))[0])


def fnmr_at(genuine: npt.ArrayLike, threshold: float) -> float:
    """Fraction of genuine scores ``< threshold``."""
    gen = np.sort(_scores(genuine, "genuine"))
    return float(_fnmr_sorted(gen, np.array([threshold]))[0])


def band_thresholds(
    genuine: npt.ArrayLike,
    impostor: npt.ArrayLike,
    *,
    fallback: FallbackStrategy = FallbackStrategy.SWAP,
) -> BandThresholds:
    """The prototype's rule: ``t_low = P99(impostor)``, ``t_high = P10(genuine)``."""
    gen = _scores(genuine, "genuine")
    imp = _scores(impostor, "impostor")
    raw_low = percentile(imp, T_LOW_IMPOSTOR_PERCENTILE)
    raw_high = percentile(gen, T_HIGH_GENUINE_PERCENTILE)
    if raw_low <= raw_high:
        return BandThresholds(raw_low, raw_high, raw_low, raw_high, False, None, None)
    crossing = (
        f"P{T_LOW_IMPOSTOR_PERCENTILE:g}(impostor)={raw_low:.6f} is above "
        f"P{T_HIGH_GENUINE_PERCENTILE:g}(genuine)={raw_high:.6f}: the score distributions "
        "overlap, so the rule's reject threshold would sit above its accept threshold"
    )
    if fallback is FallbackStrategy.SWAP:
        reason = (
            f"{crossing}; swapped them (accept at >= P{T_LOW_IMPOSTOR_PERCENTILE:g} of "
            f"impostors, reject below P{T_HIGH_GENUINE_PERCENTILE:g} of genuine) so both "
            "error-rate bounds still hold and the overlap goes to review"
        )
        return BandThresholds(raw_high, raw_low, raw_low, raw_high, True, fallback, reason)
    eer = equal_error_rate(gen, imp)
    reason = f"{crossing}; set both to the equal-error-rate threshold {eer.threshold:.6f}"
    return BandThresholds(eer.threshold, eer.threshold, raw_low, raw_high, True, fallback, reason)


def threshold_at_fmr(
    genuine: npt.ArrayLike, impostor: npt.ArrayLike, target: float
) -> FmrTargetResult:
    """Smallest threshold ``t`` with ``FMR(t) <= target``.

    With impostor scores sorted high to low (``s[0] >= s[1] >= ...``), at most
    ``k = floor(target * n)`` of them may be ``>= t``, so ``t`` must exceed ``s[k]``: the
    smallest such float is ``nextafter(s[k], +inf)``. Ties at ``s[k]`` are therefore all
    excluded, which can make the achieved FMR smaller than the target.
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"target FMR must be in (0, 1), got {target}")
    gen = _scores(genuine, "genuine")
    imp = _scores(impostor, "impostor", allow_empty=True)
    n = int(imp.shape[0])
    if n == 0:
        return FmrTargetResult(
            target, None, False, "no impostor pairs", None, None, impostor_pairs=0
        )
    allowed = math.floor(target * n + _COUNT_SLACK)
    descending = np.sort(imp)[::-1]
    threshold = float(np.nextafter(descending[allowed], np.inf))
    supported = allowed >= 1
    reason = None
    if not supported:
        needed = math.ceil(1.0 / target - _COUNT_SLACK)
        reason = (
            f"only {n} impostor pairs; a false-match rate of {target:g} needs at least "
            f"{needed}. The threshold given is just above the highest impostor score "
            "(empirical FMR 0), not an estimate of the target"
        )
    return FmrTargetResult(
        target=target,
        threshold=threshold,
        supported=supported,
        reason=reason,
        fmr=fmr_at(imp, threshold),
        fnmr=fnmr_at(gen, threshold),
        impostor_pairs=n,
    )


def equal_error_rate(genuine: npt.ArrayLike, impostor: npt.ArrayLike) -> EerResult:
    """Where FMR and FNMR cross, interpolated linearly between adjacent candidate thresholds.

    Candidates are the distinct scores plus one step above the highest. ``FMR - FNMR``
    starts at 1 (lowest score: everything accepted) and ends at -1, so a crossing exists;
    when it falls exactly on a candidate that candidate (the lowest such) is returned.
    """
    curve = det_curve(genuine, impostor)
    diff = curve.fmr - curve.fnmr
    k = int(np.argmax(diff <= 0.0))  # first index at or past the crossing; k >= 1
    if diff[k] == 0.0:
        return EerResult(eer=float(curve.fmr[k]), threshold=float(curve.thresholds[k]))
    alpha = diff[k - 1] / (diff[k - 1] - diff[k])
    fmr = curve.fmr[k - 1] + alpha * (curve.fmr[k] - curve.fmr[k - 1])
    threshold = curve.thresholds[k - 1] + alpha * (curve.thresholds[k] - curve.thresholds[k - 1])
    return EerResult(eer=float(fmr), threshold=float(threshold))


def roc_auc(genuine: npt.ArrayLike, impostor: npt.ArrayLike) -> float:
    """Mann-Whitney AUC: ``P(genuine > impostor) + 0.5 * P(genuine == impostor)``.

    Counted exactly in integers over all genuine x impostor pairs via binary search.
    """
    gen = _scores(genuine, "genuine")
    imp = np.sort(_scores(impostor, "impostor"))
    below = np.searchsorted(imp, gen, side="left").astype(np.int64)
    at_or_below = np.searchsorted(imp, gen, side="right").astype(np.int64)
    wins = int(below.sum())
    ties = int((at_or_below - below).sum())
    return (2 * wins + ties) / (2 * gen.shape[0] * imp.shape[0])


def det_curve(genuine: npt.ArrayLike, impostor: npt.ArrayLike) -> DetCurve:
    """FMR and FNMR at every distinct score: the data behind the DET and ROC curves."""
    gen = np.sort(_scores(genuine, "genuine"))
    imp = np.sort(_scores(impostor, "impostor"))
    distinct = np.unique(np.concatenate([gen, imp]))
    thresholds = np.append(distinct, np.nextafter(distinct[-1], np.inf))
    return DetCurve(
        thresholds=thresholds,
        fmr=_fmr_sorted(imp, thresholds),
        fnmr=_fnmr_sorted(gen, thresholds),
    )


def summarise(
    genuine: npt.ArrayLike,
    impostor: npt.ArrayLike,
    *,
    fmr_targets: Sequence[float] = DEFAULT_FMR_TARGETS,
    fallback: FallbackStrategy = FallbackStrategy.SWAP,
) -> ThresholdSummary:
    """Every number a calibration report holds about thresholds and error rates."""
    gen = _scores(genuine, "genuine")
    imp = _scores(impostor, "impostor")
    band = band_thresholds(gen, imp, fallback=fallback)
    targets = [threshold_at_fmr(gen, imp, t) for t in fmr_targets]
    eer = equal_error_rate(gen, imp)
    points = [
        _operating_point("t_low", band.t_low, gen, imp),
        _operating_point("t_high", band.t_high, gen, imp),
        _operating_point("eer", eer.threshold, gen, imp),
    ]
    points.extend(
        _operating_point(f"fmr_{t.target:g}", t.threshold, gen, imp)
        for t in targets
        if t.threshold is not None
    )
    return ThresholdSummary(
        band=band,
        fmr_targets=targets,
        eer=eer,
        roc_auc=roc_auc(gen, imp),
        operating_points=points,
    )


def _operating_point(
    name: str, threshold: float, genuine: FloatArray, impostor: FloatArray
) -> OperatingPoint:
    return OperatingPoint(
        name=name,
        threshold=threshold,
        fmr=fmr_at(impostor, threshold),
        fnmr=fnmr_at(genuine, threshold),
    )


def _fmr_sorted(impostor_sorted: FloatArray, thresholds: FloatArray) -> FloatArray:
    n = impostor_sorted.shape[0]
    below = np.searchsorted(impostor_sorted, thresholds, side="left")
    return np.asarray((n - below) / n, dtype=np.float64)


def _fnmr_sorted(genuine_sorted: FloatArray, thresholds: FloatArray) -> FloatArray:
    below = np.searchsorted(genuine_sorted, thresholds, side="left")
    return np.asarray(below / genuine_sorted.shape[0], dtype=np.float64)


def _scores(values: npt.ArrayLike, what: str, *, allow_empty: bool = False) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} scores must be a 1-D list, got shape {arr.shape}")
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"no {what} scores")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} scores contain non-finite values")
    return arr
