"""Classification and ISO/IEC 30107-3 presentation-attack metrics from spoof scores (numpy only).

Conventions: label 1 = spoof (attack), 0 = live (bona fide); score in [0, 1], 1 = spoof; a
presentation is classified as an attack when ``score >= threshold``.

- APCER (per attack type / PAI species): share of that type's attacks classified bona fide.
- BPCER: share of bona fide presentations classified as attacks.
- ACER = (max APCER + BPCER) / 2, i.e. the worst attack type counts.
- BPCER@APCER=x: BPCER at the highest threshold whose worst-type APCER is <= x. It is only
  "supported" when every attack type has at least ceil(1/x) samples: with fewer, one error
  already moves APCER past x and the rate cannot be resolved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

APCER_TARGETS = (0.05, 0.01)


def _arrays(labels: Sequence[int], scores: Sequence[float]) -> tuple[FloatArray, FloatArray]:
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError("labels and scores must be 1-D and of equal length")
    return y, s


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC (spoof positive) via the rank statistic; ties count half."""
    y, s = _arrays(labels, scores)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    rank_sum = float(ranks[y == 1].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def roc_curve(
    labels: Sequence[int], scores: Sequence[float]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(false positive rate, true positive rate, thresholds), thresholds descending."""
    y, s = _arrays(labels, scores)
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    n_pos, n_neg = max(int((y == 1).sum()), 1), max(int((y == 0).sum()), 1)
    tpr = np.array([((s >= t) & (y == 1)).sum() / n_pos for t in thresholds], dtype=np.float64)
    fpr = np.array([((s >= t) & (y == 0)).sum() / n_neg for t in thresholds], dtype=np.float64)
    return fpr, tpr, thresholds


def binary_metrics(
    labels: Sequence[int], scores: Sequence[float], threshold: float
) -> dict[str, Any]:
    """Accuracy, and precision / recall / F1 with spoof as the positive class."""
    y, s = _arrays(labels, scores)
    pred = s >= threshold
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    tn = int((~pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall > 0
        else None
    )
    return {
        "accuracy": _ratio(tp + tn, len(y)),
        "spoof_precision": precision,
        "spoof_recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(labels, scores),
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


def _attack_groups(
    labels: Sequence[int], scores: Sequence[float], attack_types: Sequence[str]
) -> tuple[FloatArray, dict[str, FloatArray]]:
    y, s = _arrays(labels, scores)
    if len(attack_types) != len(y):
        raise ValueError("attack_types must match labels in length")
    types = np.asarray(attack_types, dtype=object)
    bona_fide = s[y == 0]
    attacks = {str(t): s[(y == 1) & (types == t)] for t in sorted(set(types[y == 1].tolist()))}
    return bona_fide, attacks


def pad_metrics(
    labels: Sequence[int],
    scores: Sequence[float],
    attack_types: Sequence[str],
    threshold: float,
) -> dict[str, Any]:
    """APCER per attack type and the worst one, BPCER and ACER at ``threshold``."""
    bona_fide, attacks = _attack_groups(labels, scores, attack_types)
    apcer = {name: float((s < threshold).mean()) for name, s in attacks.items()}
    worst = max(apcer, key=lambda k: apcer[k]) if apcer else None
    apcer_max = apcer[worst] if worst is not None else None
    bpcer = float((bona_fide >= threshold).mean()) if len(bona_fide) else None
    acer = (apcer_max + bpcer) / 2.0 if apcer_max is not None and bpcer is not None else None
    return {
        "threshold": threshold,
        "apcer": apcer,
        "apcer_max": apcer_max,
        "worst_attack_type": worst,
        "bpcer": bpcer,
        "acer": acer,
        "n_bona_fide": len(bona_fide),
        "n_attacks": {name: len(s) for name, s in attacks.items()},
    }


def bpcer_at_apcer(
    labels: Sequence[int],
    scores: Sequence[float],
    attack_types: Sequence[str],
    target: float,
) -> dict[str, Any]:
    """BPCER at the highest threshold where every attack type's APCER is <= ``target``."""
    bona_fide, attacks = _attack_groups(labels, scores, attack_types)
    needed = math.ceil(1.0 / target - 1e-9)
    out: dict[str, Any] = {"target_apcer": target, "min_attacks_per_type": needed}
    smallest = min((len(s) for s in attacks.values()), default=0)
    if not attacks or smallest < needed:
        why = f"not supported: needs >= {needed} samples per attack type, smallest has {smallest}"
        return {**out, "supported": False, "reason": why}
    if len(bona_fide) == 0:
        return {**out, "supported": False, "reason": "not supported: no bona fide samples"}
    # Per type, allowing k = floor(target * n) misses puts the threshold at the (k+1)-th
    # smallest attack score: exactly those k (or fewer, with ties) fall below it.
    threshold = min(float(np.sort(s)[math.floor(target * len(s) + 1e-9)]) for s in attacks.values())
    achieved = max(float((s < threshold).mean()) for s in attacks.values())
    return {
        **out,
        "supported": True,
        "threshold": threshold,
        "apcer_max": achieved,
        "bpcer": float((bona_fide >= threshold).mean()),
    }


def evaluate_scores(
    labels: Sequence[int],
    scores: Sequence[float],
    attack_types: Sequence[str],
    threshold: float,
    loss: float | None = None,
) -> dict[str, Any]:
    """Every reported number for one split, JSON-ready."""
    y, _ = _arrays(labels, scores)
    return {
        "n": len(y),
        "n_live": int((y == 0).sum()),
        "n_spoof": int((y == 1).sum()),
        "loss": loss,
        "threshold": threshold,
        **binary_metrics(labels, scores, threshold),
        "iso_30107_3": {
            **pad_metrics(labels, scores, attack_types, threshold),
            "bpcer_at_apcer": {
                f"apcer_{t * 100:g}pct": bpcer_at_apcer(labels, scores, attack_types, t)
                for t in APCER_TARGETS
            },
        },
    }
