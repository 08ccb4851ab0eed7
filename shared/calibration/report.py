"""The calibration report (``report.json``) and how one is built from embeddings.

The report is self-contained: thresholds, error rates, the raw score lists with the pairs
behind them, and which model produced the embeddings, so a calibration can be re-plotted,
audited or stored as the active thresholds for that model version without the photos.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from shared.calibration.scores import CalibrationScores, compute_scores
from shared.calibration.thresholds import (
    DEFAULT_FMR_TARGETS,
    PERCENTILE_METHOD,
    RULE,
    FallbackStrategy,
    ThresholdSummary,
    percentile,
    summarise,
)
from shared.errors import ErrorCode, FaceauthError

REPORT_SCHEMA_VERSION = 1

Pair = tuple[int, int]
# The reason recorded for a failure to acquire whose embedder gave no code.
UNUSABLE = "unusable"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Counts(_Frozen):
    persons: int
    images: int
    images_skipped: int
    genuine_pairs: int
    impostor_pairs: int
    impostor_pairs_total: int = Field(description="cross-person pairs before any sampling")
    mean_template_pairs: int
    mean_template_pairs_total: int


class ScoreStats(_Frozen):
    count: int
    min: float
    max: float
    mean: float
    p1: float
    p10: float
    p50: float
    p90: float
    p99: float


class Fallback(_Frozen):
    used: bool
    strategy: FallbackStrategy | None = None
    reason: str | None = None
    raw_t_low: float = Field(description="the rule's t_low before any fallback")
    raw_t_high: float = Field(description="the rule's t_high before any fallback")


class FmrTarget(_Frozen):
    target: float
    threshold: float | None
    supported: bool
    reason: str | None = None
    fmr: float | None = None
    fnmr: float | None = None
    gfnmr: float | None = Field(default=None, description="generalized FNMR, see OperatingPoint")
    impostor_pairs: int


class OperatingPoint(_Frozen):
    name: str
    threshold: float
    fmr: float
    fnmr: float = Field(description="false non-match rate of the photos that were acquired")
    gfnmr: float | None = Field(
        default=None,
        description="generalized FNMR (ISO/IEC 19795-1): FTA + (1 - FTA) * FNMR, failures to "
        "acquire counted as false non-matches; null when the FTA is unknown (--from-db)",
    )


class FtaReason(_Frozen):
    code: str = Field(description="quality reason or error code; 'unusable' when none given")
    count: int = Field(description="images refused with this reason (one image may have several)")
    rate: float = Field(description="count / attempts")


class FailureToAcquire(_Frozen):
    """Photos presented but never compared: refused by decoding, detection or the gate."""

    attempts: int = Field(description="image files in person folders")
    failures: int
    rate: float = Field(description="failures / attempts (the FTA rate)")
    by_reason: list[FtaReason] = Field(description="most frequent first")


class SkippedImage(_Frozen):
    item: str = Field(description="image path relative to the calibration root, or an id")
    reason: str
    code: str | None = Field(
        default=None, description="FaceauthError code when the embedder gave one"
    )
    codes: list[str] = Field(default_factory=list, description="every reason code given")
    attempted: bool = Field(
        default=False,
        description="an image in a person folder that could not be used (a failure to "
        "acquire), as opposed to a file that is not a calibration image at all",
    )


class CalibrationReport(_Frozen):
    """Everything ``faceauth calibrate`` writes to ``report.json``."""

    schema_version: int = REPORT_SCHEMA_VERSION
    model_name: str
    model_version: str
    created_at: datetime
    source: str | None = Field(default=None, description="directory or 'database'")
    rule: str = RULE
    percentile_method: str = PERCENTILE_METHOD
    counts: Counts
    t_low: float = Field(description="reject below this score")
    t_high: float = Field(description="accept at or above this score")
    fallback: Fallback
    fmr_targets: list[FmrTarget]
    eer: float
    eer_threshold: float
    roc_auc: float
    operating_points: list[OperatingPoint]
    genuine_stats: ScoreStats
    impostor_stats: ScoreStats
    mean_template_impostor_stats: ScoreStats | None
    persons: list[str]
    items: list[str] = Field(description="images used; pair indices point into this list")
    genuine_scores: list[float]
    genuine_pairs: list[Pair]
    impostor_scores: list[float]
    impostor_pairs: list[Pair]
    mean_template_impostor_scores: list[float]
    mean_template_pairs: list[Pair] = Field(description="indices into persons")
    skipped: list[SkippedImage]
    failure_to_acquire: FailureToAcquire | None = Field(
        default=None, description="null when calibrated from stored templates"
    )

    def to_json(self, *, indent: int | None = None) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> CalibrationReport:
        return cls.model_validate_json(text)

    def write(self, path: Path) -> None:
        """Write ``to_json()`` via a temporary file so a crash never leaves half a report."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(indent=1), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> CalibrationReport:
        return cls.from_json(path.read_bytes())


def build_report(
    embeddings_by_person: Mapping[str, npt.ArrayLike],
    *,
    model_name: str,
    model_version: str,
    item_names: Mapping[str, Sequence[str]] | None = None,
    skipped: Sequence[SkippedImage] = (),
    source: str | None = None,
    fmr_targets: Sequence[float] = DEFAULT_FMR_TARGETS,
    fallback: FallbackStrategy = FallbackStrategy.SWAP,
    max_pairs: int | None = None,
    seed: int = 0,
    created_at: datetime | None = None,
    acquisition_attempts: int | None = None,
) -> CalibrationReport:
    """Scores, thresholds and error rates for L2-normalised embeddings grouped by person.

    This is the entry point for both the directory CLI and the database job (which passes
    each enrolled user's templates as one person). ``max_pairs`` caps the cross-person
    score lists, see :func:`shared.calibration.scores.compute_scores`.
    ``acquisition_attempts`` (images presented, used or not) turns on the failure-to-acquire
    figures: the ``skipped`` entries marked ``attempted`` are the failures.

    Raises ``FaceauthError(CALIBRATION_INSUFFICIENT_DATA)`` when there is no genuine pair
    (no person with two usable images) or no impostor pair (fewer than two persons).
    """
    if all(np.asarray(rows).size == 0 for rows in embeddings_by_person.values()):
        raise _insufficient("no embeddings to calibrate on", persons=0)
    scores = compute_scores(
        embeddings_by_person, item_names=item_names, max_pairs=max_pairs, seed=seed
    )
    if len(scores.genuine) == 0:
        raise _insufficient(
            "no genuine pairs: calibration needs a person with at least two usable images",
            persons=len(scores.persons),
            images=len(scores.items),
        )
    if len(scores.impostor) == 0:
        raise _insufficient(
            "no impostor pairs: calibration needs at least two persons",
            persons=len(scores.persons),
            images=len(scores.items),
        )
    summary = summarise(
        scores.genuine.scores, scores.impostor.scores, fmr_targets=fmr_targets, fallback=fallback
    )
    fta = (
        None
        if acquisition_attempts is None
        else failure_to_acquire(skipped, attempts=acquisition_attempts)
    )
    return _assemble(
        scores,
        summary,
        model_name=model_name,
        model_version=model_version,
        skipped=list(skipped),
        source=source,
        created_at=created_at or datetime.now(UTC),
        fta=fta,
    )


def failure_to_acquire(skipped: Sequence[SkippedImage], *, attempts: int) -> FailureToAcquire:
    """FTA rate overall and by reason from the skipped images that were attempts."""
    failed = [s for s in skipped if s.attempted]
    if attempts < len(failed):
        raise ValueError(f"{len(failed)} failures to acquire out of only {attempts} attempts")
    counts: dict[str, int] = {}
    for item in failed:
        for code in dict.fromkeys(item.codes or [item.code or UNUSABLE]):
            counts[code] = counts.get(code, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return FailureToAcquire(
        attempts=attempts,
        failures=len(failed),
        rate=len(failed) / attempts if attempts else 0.0,
        by_reason=[FtaReason(code=c, count=n, rate=n / attempts) for c, n in ranked],
    )


def generalized_fnmr(fnmr: float, fta_rate: float) -> float:
    """ISO/IEC 19795-1 generalized FNMR: a failure to acquire is a false non-match.

    A genuine attempt either fails to acquire (probability FTA) or is compared and falsely
    non-matched with probability FNMR: GFNMR = FTA + (1 - FTA) * FNMR.
    """
    return fta_rate + (1.0 - fta_rate) * fnmr


def _assemble(
    scores: CalibrationScores,
    summary: ThresholdSummary,
    *,
    model_name: str,
    model_version: str,
    skipped: list[SkippedImage],
    source: str | None,
    created_at: datetime,
    fta: FailureToAcquire | None = None,
) -> CalibrationReport:
    band = summary.band

    def gfnmr(fnmr: float | None) -> float | None:
        return None if fta is None or fnmr is None else generalized_fnmr(fnmr, fta.rate)

    mean_scores = scores.mean_template_impostor.scores
    return CalibrationReport(
        model_name=model_name,
        model_version=model_version,
        created_at=created_at,
        source=source,
        counts=Counts(
            persons=len(scores.persons),
            images=len(scores.items),
            images_skipped=len(skipped),
            genuine_pairs=len(scores.genuine),
            impostor_pairs=len(scores.impostor),
            impostor_pairs_total=scores.impostor_total_pairs,
            mean_template_pairs=len(scores.mean_template_impostor),
            mean_template_pairs_total=scores.mean_template_total_pairs,
        ),
        t_low=band.t_low,
        t_high=band.t_high,
        fallback=Fallback(
            used=band.fallback_used,
            strategy=band.fallback_strategy,
            reason=band.fallback_reason,
            raw_t_low=band.raw_t_low,
            raw_t_high=band.raw_t_high,
        ),
        fmr_targets=[
            FmrTarget(
                target=t.target,
                threshold=t.threshold,
                supported=t.supported,
                reason=t.reason,
                fmr=t.fmr,
                fnmr=t.fnmr,
                gfnmr=gfnmr(t.fnmr),
                impostor_pairs=t.impostor_pairs,
            )
            for t in summary.fmr_targets
        ],
        eer=summary.eer.eer,
        eer_threshold=summary.eer.threshold,
        roc_auc=summary.roc_auc,
        operating_points=[
            OperatingPoint(
                name=p.name, threshold=p.threshold, fmr=p.fmr, fnmr=p.fnmr, gfnmr=gfnmr(p.fnmr)
            )
            for p in summary.operating_points
        ],
        genuine_stats=score_stats(scores.genuine.scores),
        impostor_stats=score_stats(scores.impostor.scores),
        mean_template_impostor_stats=score_stats(mean_scores) if mean_scores.size else None,
        persons=scores.persons,
        items=scores.items,
        genuine_scores=scores.genuine.scores.tolist(),
        genuine_pairs=_pairs(scores.genuine.pairs),
        impostor_scores=scores.impostor.scores.tolist(),
        impostor_pairs=_pairs(scores.impostor.pairs),
        mean_template_impostor_scores=mean_scores.tolist(),
        mean_template_pairs=_pairs(scores.mean_template_impostor.pairs),
        skipped=skipped,
        failure_to_acquire=fta,
    )


def score_stats(scores: npt.ArrayLike) -> ScoreStats:
    arr = np.asarray(scores, dtype=np.float64)
    return ScoreStats(
        count=int(arr.shape[0]),
        min=float(arr.min()),
        max=float(arr.max()),
        mean=float(arr.mean()),
        p1=percentile(arr, 1.0),
        p10=percentile(arr, 10.0),
        p50=percentile(arr, 50.0),
        p90=percentile(arr, 90.0),
        p99=percentile(arr, 99.0),
    )


def _pairs(pairs: npt.NDArray[np.int64]) -> list[Pair]:
    return [(int(a), int(b)) for a, b in pairs.tolist()]


def _insufficient(message: str, **details: int) -> FaceauthError:
    return FaceauthError(ErrorCode.CALIBRATION_INSUFFICIENT_DATA, message, **details)
