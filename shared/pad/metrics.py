"""ISO/IEC 30107-3 presentation-attack detection metrics from spoof scores (numpy only).

Conventions, the workers' own (``LivenessScore.is_spoof``): a spoof score is in [0, 1],
1 = attack, and a presentation is *classified as an attack* when its score is **above**
the threshold. So at threshold ``t``:

- APCER of a PAI species: share of that species' attack presentations with score <= t
  (classified bona fide). The headline APCER is the worst species' (max), as 30107-3
  asks for when several species are tested.
- BPCER: share of bona fide presentations with score > t (classified attacks).
- ACER = (max APCER + BPCER) / 2. 30107-3 discourages ACER (it mixes two error kinds);
  it is reported because it is widely quoted, next to its parts.
- BPCER@APCER=x: BPCER at the highest threshold where every species' APCER <= x (the
  most convenient for bona fide users while attacks stay under x). APCER@BPCER=x: the
  worst species' APCER at the lowest threshold where BPCER <= x.
- EER: attacks of all species pooled against bona fide; the candidate threshold (each
  distinct score, and one below them all) where |APCER - BPCER| is smallest (the lowest
  such threshold on a tie) and EER = (APCER + BPCER) / 2 there. No interpolation.
- ROC-AUC: P(attack score > bona fide score) + 0.5 P(equal), attacks pooled.

Confidence intervals (95 % by default): Wilson score intervals for rates measured at a
fixed threshold (APCER per species, the worst one, BPCER); percentile bootstrap for
everything whose threshold is itself chosen from the data (ACER, EER, ROC-AUC and the
operating points), resampling bona fide and each species separately (stratified), with a
seeded generator so a report can be reproduced. No bootstrap interval is given when a
class holds a single presentation (every resample would repeat it: a zero-width interval).

When a number is *supported* (otherwise it is still given, marked ``supported: false``
with the reason): the rule of 3 — zero errors in n trials bound a rate below 3/n at 95 %
confidence — sets the counts.

- A rate measured at a threshold needs >= ``MIN_RATE_SAMPLES`` (30) presentations in its
  denominator: with fewer, even a perfect result cannot show the rate is under 10 %.
- BPCER@APCER=x needs >= ceil(3 / x) attacks of *every* species (and 30 bona fide);
  APCER@BPCER=x needs >= ceil(3 / x) bona fide (and 30 attacks of every species).
- ACER needs both parts supported; EER and ROC-AUC need 30 bona fide and 30 attacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

APCER_TARGETS: tuple[float, ...] = (0.01, 0.05, 0.10)
BPCER_TARGETS: tuple[float, ...] = (0.01, 0.05)
MIN_RATE_SAMPLES = 30
CONFIDENCE = 0.95
BOOTSTRAP_REPLICATES = 1000
NO_BOOTSTRAP = "none: bootstrap needs >= 2 presentations in every class"
# floor(x * n) of a product that should be an integer (0.05 * 60) must not round down.
_COUNT_SLACK = 1e-9


def rule_of_three(target: float) -> int:
    """Presentations needed before a rate of ``target`` can be shown (zero errors, 95 %)."""
    return math.ceil(3.0 / target - _COUNT_SLACK)


# --- rates and thresholds ------------------------------------------------------------------


def as_scores(values: npt.ArrayLike) -> FloatArray:
    scores = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    return scores


def apcer(attack: FloatArray, threshold: float) -> float | None:
    """Share of attacks classified bona fide (score <= threshold); None without attacks."""
    return float(np.mean(attack <= threshold)) if attack.size else None


def bpcer(bona_fide: FloatArray, threshold: float) -> float | None:
    """Share of bona fide presentations classified attacks (score > threshold)."""
    return float(np.mean(bona_fide > threshold)) if bona_fide.size else None


def threshold_at_apcer(attacks: Mapping[str, FloatArray], target: float) -> float | None:
    """Highest threshold where every species' APCER <= ``target``.

    A species with ``n`` attacks may have ``k = floor(target * n)`` of them at or below
    the threshold, so the threshold must stay below its (k+1)-th smallest score: the
    largest such float is just below it. The strictest species decides.
    """
    _check_target(target)
    candidates = []
    for scores in attacks.values():
        if scores.size == 0:
            continue
        k = math.floor(target * scores.size + _COUNT_SLACK)
        candidates.append(float(np.nextafter(np.sort(scores)[k], -np.inf)))
    return min(candidates) if candidates else None


def threshold_at_bpcer(bona_fide: FloatArray, target: float) -> float | None:
    """Lowest threshold where BPCER <= ``target``.

    ``k = floor(target * n)`` bona fide scores may lie above it: it is the (k+1)-th highest
    score (ties with it are at, not above, the threshold).
    """
    _check_target(target)
    if bona_fide.size == 0:
        return None
    k = math.floor(target * bona_fide.size + _COUNT_SLACK)
    return float(np.sort(bona_fide)[::-1][k])


def equal_error_rate(bona_fide: FloatArray, attack: FloatArray) -> tuple[float, float] | None:
    """(EER, threshold) with attacks pooled; see the module docstring for the rule."""
    if bona_fide.size == 0 or attack.size == 0:
        return None
    thresholds, apcers, bpcers = error_curve(bona_fide, attack)
    gap = np.abs(apcers - bpcers)
    i = int(np.argmin(gap))  # first minimum: the lowest threshold on a tie
    return float((apcers[i] + bpcers[i]) / 2.0), float(thresholds[i])


def error_curve(
    bona_fide: FloatArray, attack: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(thresholds ascending, APCER, BPCER) at each distinct score and just below them all."""
    distinct = np.unique(np.concatenate([bona_fide, attack]))
    thresholds = np.concatenate([[np.nextafter(distinct[0], -np.inf)], distinct])
    attack_sorted, bona_sorted = np.sort(attack), np.sort(bona_fide)
    at_or_below = np.searchsorted(attack_sorted, thresholds, side="right")
    apcers = at_or_below / max(attack.size, 1)
    above = bona_fide.size - np.searchsorted(bona_sorted, thresholds, side="right")
    bpcers = above / max(bona_fide.size, 1)
    return thresholds, apcers.astype(np.float64), bpcers.astype(np.float64)


def roc_auc(bona_fide: FloatArray, attack: FloatArray) -> float | None:
    """P(attack score > bona fide score) + 0.5 P(equal), counted exactly."""
    if bona_fide.size == 0 or attack.size == 0:
        return None
    bona_sorted = np.sort(bona_fide)
    below = np.searchsorted(bona_sorted, attack, side="left").astype(np.int64)
    at_or_below = np.searchsorted(bona_sorted, attack, side="right").astype(np.int64)
    wins, ties = int(below.sum()), int((at_or_below - below).sum())
    return (2 * wins + ties) / (2 * bona_fide.size * attack.size)


def wilson_interval(errors: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion ``errors / n`` (n > 0)."""
    if n <= 0:
        raise ValueError("a proportion needs n > 0")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = errors / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The bounds at 0 and n errors are exactly 0 and 1; the formula leaves rounding dust.
    low = 0.0 if errors == 0 else max(0.0, centre - half)
    high = 1.0 if errors == n else min(1.0, centre + half)
    return low, high


def _check_target(target: float) -> None:
    if not 0.0 < target < 1.0:
        raise ValueError(f"a target rate must be in (0, 1), got {target}")


# --- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """One reported number with its interval and whether the counts support it."""

    value: float | None
    ci: tuple[float, float] | None
    ci_method: str | None
    supported: bool
    reason: str | None = None
    threshold: float | None = None  # for operating points: the threshold they select
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "value": self.value,
            "ci_low": None if self.ci is None else self.ci[0],
            "ci_high": None if self.ci is None else self.ci[1],
            "ci_method": self.ci_method,
            "supported": self.supported,
        }
        if self.reason:
            out["unsupported_reason"] = self.reason
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out | self.extra


@dataclass(frozen=True)
class PadEvaluation:
    threshold: float
    confidence: float
    bootstrap_replicates: int
    seed: int
    n_bona_fide: int
    n_attacks: dict[str, int]
    apcer: dict[str, Estimate]  # per species
    apcer_max: Estimate
    worst_species: str | None
    bpcer: Estimate
    acer: Estimate
    bpcer_at_apcer: dict[float, Estimate]
    apcer_at_bpcer: dict[float, Estimate]
    eer: Estimate
    roc_auc: Estimate

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "confidence": self.confidence,
            "bootstrap_replicates": self.bootstrap_replicates,
            "seed": self.seed,
            "n_bona_fide": self.n_bona_fide,
            "n_attacks": self.n_attacks,
            "apcer": {s: e.as_dict() for s, e in self.apcer.items()},
            "apcer_max": self.apcer_max.as_dict() | {"species": self.worst_species},
            "bpcer": self.bpcer.as_dict(),
            "acer": self.acer.as_dict(),
            "bpcer_at_apcer": {_pct(t): e.as_dict() for t, e in self.bpcer_at_apcer.items()},
            "apcer_at_bpcer": {_pct(t): e.as_dict() for t, e in self.apcer_at_bpcer.items()},
            "eer": self.eer.as_dict(),
            "roc_auc": self.roc_auc.as_dict(),
            "support_rules": {
                "min_rate_samples": MIN_RATE_SAMPLES,
                "operating_point": "rule of 3: >= ceil(3 / target) presentations in the"
                " class the target constrains (every species for APCER targets)",
            },
        }


def _pct(target: float) -> str:
    return f"{100 * target:g}%"


def _rate_estimate(errors: int, n: int, confidence: float, what: str) -> Estimate:
    if n == 0:
        return Estimate(None, None, None, False, f"no {what}")
    supported = n >= MIN_RATE_SAMPLES
    reason = None if supported else f"{n} {what} < {MIN_RATE_SAMPLES}"
    return Estimate(errors / n, wilson_interval(errors, n, confidence), "wilson", supported, reason)


Statistic = Callable[[FloatArray, dict[str, FloatArray]], float | None]


def _bootstrap(
    statistic: Statistic,
    bona_fide: FloatArray,
    attacks: dict[str, FloatArray],
    *,
    replicates: int,
    rng: np.random.Generator,
    confidence: float,
) -> tuple[float, float] | None:
    """Percentile interval of ``statistic`` over stratified resamples; None if undefined."""
    if replicates <= 0:
        return None
    values = []
    for _ in range(replicates):
        b = rng.choice(bona_fide, bona_fide.size) if bona_fide.size else bona_fide
        a = {s: rng.choice(x, x.size) if x.size else x for s, x in attacks.items()}
        value = statistic(b, a)
        if value is not None:
            values.append(value)
    if not values:
        return None
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(values), [alpha, 1.0 - alpha])
    return float(low), float(high)


def _pooled(attacks: Mapping[str, FloatArray]) -> FloatArray:
    parts = [a for a in attacks.values() if a.size]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)


def _worst_apcer(attacks: Mapping[str, FloatArray], threshold: float) -> float | None:
    rates = [r for r in (apcer(a, threshold) for a in attacks.values()) if r is not None]
    return max(rates) if rates else None


def _acer(bona_fide: FloatArray, attacks: dict[str, FloatArray], threshold: float) -> float | None:
    worst, b = _worst_apcer(attacks, threshold), bpcer(bona_fide, threshold)
    return None if worst is None or b is None else (worst + b) / 2.0


def _bpcer_at_apcer(b: FloatArray, a: dict[str, FloatArray], target: float) -> float | None:
    t = threshold_at_apcer(a, target)
    return None if t is None else bpcer(b, t)


def _apcer_at_bpcer(b: FloatArray, a: dict[str, FloatArray], target: float) -> float | None:
    t = threshold_at_bpcer(b, target)
    return None if t is None else _worst_apcer(a, t)


def _eer_value(b: FloatArray, a: dict[str, FloatArray]) -> float | None:
    found = equal_error_rate(b, _pooled(a))
    return None if found is None else found[0]


def _auc_value(b: FloatArray, a: dict[str, FloatArray]) -> float | None:
    return roc_auc(b, _pooled(a))


def evaluate_pad(
    bona_fide: npt.ArrayLike,
    attacks: Mapping[str, npt.ArrayLike],
    *,
    threshold: float,
    apcer_targets: Sequence[float] = APCER_TARGETS,
    bpcer_targets: Sequence[float] = BPCER_TARGETS,
    confidence: float = CONFIDENCE,
    bootstrap: int = BOOTSTRAP_REPLICATES,
    seed: int = 0,
) -> PadEvaluation:
    """Every ISO/IEC 30107-3 number of one evaluation, each with its interval and support."""
    bona = as_scores(bona_fide)
    species = {str(name): as_scores(s) for name, s in sorted(attacks.items())}
    rng = np.random.default_rng(seed)
    n_b = int(bona.size)
    counts = {s: int(a.size) for s, a in species.items()}
    smallest = min(counts.values(), default=0)

    # With a single presentation in a class every resample repeats it, and the interval
    # collapses onto the estimate: no interval is better than a falsely narrow one.
    can_boot = bona.size >= 2 and all(a.size >= 2 for a in species.values() if a.size)
    boot_method = "bootstrap" if can_boot else NO_BOOTSTRAP

    def boot(statistic: Statistic) -> tuple[float, float] | None:
        if not can_boot:
            return None
        return _bootstrap(
            statistic, bona, species, replicates=bootstrap, rng=rng, confidence=confidence
        )

    per_species = {
        s: _rate_estimate(int((a <= threshold).sum()), int(a.size), confidence, "attacks")
        for s, a in species.items()
    }
    rates = {s: e.value for s, e in per_species.items() if e.value is not None}
    worst = max(rates, key=lambda s: rates[s]) if rates else None
    if worst is None:
        apcer_max = Estimate(None, None, None, False, "no attacks")
    else:
        # Wilson of the worst species' own counts: the max over species is that rate.
        w = per_species[worst]
        all_ok = all(e.supported for e in per_species.values())
        apcer_max = Estimate(
            w.value,
            w.ci,
            "wilson (worst species)",
            all_ok,
            None if all_ok else f"some species have < {MIN_RATE_SAMPLES} attacks",
        )
    bpcer_est = _rate_estimate(int((bona > threshold).sum()), n_b, confidence, "bona fide")

    acer_value = _acer(bona, species, threshold)
    acer_ok = apcer_max.supported and bpcer_est.supported
    acer = Estimate(
        acer_value,
        boot(partial(_acer, threshold=threshold)) if acer_value is not None else None,
        boot_method,
        acer_ok,
        None if acer_ok else "APCER or BPCER unsupported",
    )

    bpcer_at: dict[float, Estimate] = {}
    for target in apcer_targets:
        t = threshold_at_apcer(species, target)
        need = rule_of_three(target)
        ok = smallest >= need and n_b >= MIN_RATE_SAMPLES
        value = None if t is None else bpcer(bona, t)
        bpcer_at[target] = Estimate(
            value,
            boot(partial(_bpcer_at_apcer, target=target)) if value is not None else None,
            boot_method,
            ok,
            None
            if ok
            else f"needs >= {need} attacks of every species (smallest: {smallest})"
            f" and >= {MIN_RATE_SAMPLES} bona fide ({n_b})",
            threshold=t,
            extra={"apcer_max": None if t is None else _worst_apcer(species, t)},
        )
    apcer_at: dict[float, Estimate] = {}
    for target in bpcer_targets:
        t = threshold_at_bpcer(bona, target)
        need = rule_of_three(target)
        ok = n_b >= need and smallest >= MIN_RATE_SAMPLES
        value = None if t is None else _worst_apcer(species, t)
        apcer_at[target] = Estimate(
            value,
            boot(partial(_apcer_at_bpcer, target=target)) if value is not None else None,
            boot_method,
            ok,
            None
            if ok
            else f"needs >= {need} bona fide ({n_b}) and >= {MIN_RATE_SAMPLES} attacks"
            f" of every species (smallest: {smallest})",
            threshold=t,
            extra={"bpcer": None if t is None else bpcer(bona, t)},
        )

    pooled = _pooled(species)
    curve_ok = n_b >= MIN_RATE_SAMPLES and pooled.size >= MIN_RATE_SAMPLES
    curve_why = (
        None
        if curve_ok
        else f"needs >= {MIN_RATE_SAMPLES} bona fide ({n_b}) and attacks ({pooled.size})"
    )
    found = equal_error_rate(bona, pooled)
    eer = Estimate(
        None if found is None else found[0],
        boot(_eer_value) if found is not None else None,
        boot_method,
        curve_ok,
        curve_why,
        threshold=None if found is None else found[1],
    )
    auc_value = roc_auc(bona, pooled)
    auc = Estimate(
        auc_value,
        boot(_auc_value) if auc_value is not None else None,
        boot_method,
        curve_ok,
        curve_why,
    )
    return PadEvaluation(
        threshold=threshold,
        confidence=confidence,
        bootstrap_replicates=bootstrap,
        seed=seed,
        n_bona_fide=n_b,
        n_attacks=counts,
        apcer=per_species,
        apcer_max=apcer_max,
        worst_species=worst,
        bpcer=bpcer_est,
        acer=acer,
        bpcer_at_apcer=bpcer_at,
        apcer_at_bpcer=apcer_at,
        eer=eer,
        roc_auc=auc,
    )
