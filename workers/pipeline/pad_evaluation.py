"""Score a labelled presentation set with a liveness model and build the evaluation report.

The metrics are ``shared.pad.metrics``; this module drives the models: it reads each
image, finds the largest face with the face pack's detector (as ``faceauth liveness
score`` does) and scores it. An image that cannot be read or holds no face is a
*failure to acquire*: it gets no score, so it is counted by reason and group and reported
as the non-response rates of ISO/IEC 30107-3 (BPNRR for bona fide, APNRR per species),
never silently dropped and never folded into APCER or BPCER.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from shared.errors import ErrorCode, FaceauthError
from shared.imaging import decode_image
from shared.pad.metrics import PadEvaluation, as_scores, evaluate_pad
from shared.pad.samples import PadSample

if TYPE_CHECKING:
    from shared.config import Settings
    from workers.inference.face_pack import FacePack
    from workers.inference.liveness import LivenessScorer

BONA_FIDE = "bona_fide"


@dataclass(frozen=True)
class ScoredSample:
    sample: PadSample
    spoof_score: float | None  # None: failure to acquire
    failure_code: str | None = None
    failure_message: str | None = None
    faces: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": str(self.sample.path),
            "label": "attack" if self.sample.is_attack else "bona_fide",
            "species": self.sample.species,
            "subject": self.sample.subject,
            "spoof_score": self.spoof_score,
            "faces": self.faces,
        }
        if self.failure_code is not None:
            out["failure"] = {"code": self.failure_code, "message": self.failure_message}
        return out


def score_sample(
    sample: PadSample, scorer: LivenessScorer, pack: FacePack, settings: Settings
) -> ScoredSample:
    try:
        try:
            data = sample.path.read_bytes()
        except OSError as exc:
            raise FaceauthError(ErrorCode.IMAGE_NOT_FOUND, f"cannot read the file: {exc}") from exc
        image = decode_image(
            data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        )
        faces = pack.detect(image.pixels)
        if not faces:
            raise FaceauthError(ErrorCode.NO_FACE, "no face detected")
    except FaceauthError as exc:
        return ScoredSample(sample, None, str(exc.code), exc.message)
    score = scorer.score(image.pixels, [list(faces[0].bbox)])[0]  # largest face first
    return ScoredSample(sample, float(score.spoof_score), faces=len(faces))


def score_samples(
    samples: list[PadSample],
    scorer: LivenessScorer,
    pack: FacePack,
    settings: Settings,
    *,
    progress: bool = True,
) -> list[ScoredSample]:
    bar = tqdm(samples, desc="liveness evaluate", unit="img", disable=not progress)
    return [score_sample(s, scorer, pack, settings) for s in bar]


def _groups(scored: list[ScoredSample]) -> tuple[list[float], dict[str, list[float]]]:
    bona: list[float] = []
    attacks: dict[str, list[float]] = {}
    for s in scored:
        species = s.sample.species
        bucket = bona if species is None else attacks.setdefault(species, [])
        if s.spoof_score is not None:
            bucket.append(s.spoof_score)
    return bona, attacks


def failures_to_acquire(scored: list[ScoredSample]) -> dict[str, Any]:
    """Per group (bona fide, each species): presentations, failures by reason, the rate."""
    out: dict[str, Any] = {}
    for group in sorted({s.sample.group for s in scored}, key=lambda g: (g != BONA_FIDE, g)):
        members = [s for s in scored if s.sample.group == group]
        failed = [s for s in members if s.spoof_score is None]
        out[group] = {
            "presentations": len(members),
            "failures": len(failed),
            "rate": len(failed) / len(members),
            "by_reason": dict(Counter(str(s.failure_code) for s in failed)),
            "rate_name": "BPNRR" if group == BONA_FIDE else "APNRR",
        }
    return out


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    how: str  # "threshold", "target_apcer", "target_bpcer" or "settings"
    target: float | None
    supported: bool
    reason: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "chosen_by": self.how,
            "target": self.target,
            "supported": self.supported,
            "unsupported_reason": self.reason,
        }


def choose_threshold(
    bona: list[float],
    attacks: dict[str, list[float]],
    *,
    threshold: float | None,
    target_apcer: float | None,
    target_bpcer: float | None,
    default: float,
) -> ThresholdChoice:
    """The operating threshold: given, or chosen for a target rate, or the default."""
    if threshold is not None:
        return ThresholdChoice(threshold, "threshold", None, True, None)
    if target_apcer is None and target_bpcer is None:
        return ThresholdChoice(default, "settings", None, True, None)
    # Evaluate once just for the operating point (no bootstrap): it carries the support rule.
    probe = evaluate_pad(
        bona,
        attacks,
        threshold=default,
        apcer_targets=() if target_apcer is None else (target_apcer,),
        bpcer_targets=() if target_bpcer is None else (target_bpcer,),
        bootstrap=0,
    )
    if target_apcer is not None:
        point, how, target = probe.bpcer_at_apcer[target_apcer], "target_apcer", target_apcer
    else:
        assert target_bpcer is not None
        point, how, target = probe.apcer_at_bpcer[target_bpcer], "target_bpcer", target_bpcer
    if point.threshold is None:
        raise ValueError(f"no threshold for {how} {target}: the set lacks the class it constrains")
    # Stored thresholds live in [0, 1] (the table's CHECK); "just below the lowest attack
    # score" may fall under 0 only for a score of exactly 0.
    chosen = min(max(point.threshold, 0.0), 1.0)
    return ThresholdChoice(chosen, how, target, point.supported, point.reason)


def evaluate_set(
    scored: list[ScoredSample],
    *,
    choice: ThresholdChoice,
    bootstrap: int,
    seed: int,
    confidence: float,
) -> PadEvaluation:
    bona, attacks = _groups(scored)
    return evaluate_pad(
        bona,
        attacks,
        threshold=choice.threshold,
        bootstrap=bootstrap,
        seed=seed,
        confidence=confidence,
    )


def group_scores(scored: list[ScoredSample]) -> tuple[Any, dict[str, Any]]:
    """(bona fide scores, {species: scores}) as arrays, failures to acquire left out."""
    bona, attacks = _groups(scored)
    return as_scores(bona), {s: as_scores(v) for s, v in sorted(attacks.items())}


def build_report(
    *,
    scored: list[ScoredSample],
    evaluation: PadEvaluation,
    choice: ThresholdChoice,
    scorer: LivenessScorer,
    source: Path,
    face_model_version: str,
) -> dict[str, Any]:
    bona, attacks = _groups(scored)
    means = {BONA_FIDE: bona, **attacks}
    return {
        "model": {"name": scorer.name, "version": scorer.version},
        "face_model_version": face_model_version,
        "source": str(source),
        "presentations": len(scored),
        "operating_threshold": choice.as_dict(),
        "failures_to_acquire": failures_to_acquire(scored),
        "metrics": evaluation.as_dict(),
        "mean_spoof_score": {g: float(np.mean(v)) if v else None for g, v in means.items()},
        "samples": [s.as_dict() for s in scored],
    }


def stored_summary(report: dict[str, Any]) -> dict[str, Any]:
    """What the database keeps of a report: everything but the per-image list."""
    return {k: v for k, v in report.items() if k != "samples"}
