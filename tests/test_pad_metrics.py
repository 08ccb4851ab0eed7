"""ISO/IEC 30107-3 metrics against a direct, loop-by-loop computation on constructed scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.pad.metrics import (
    MIN_RATE_SAMPLES,
    equal_error_rate,
    evaluate_pad,
    roc_auc,
    rule_of_three,
    threshold_at_apcer,
    threshold_at_bpcer,
    wilson_interval,
)

Z95 = 1.959963984540054


def _direct_apcer(attack: list[float], t: float) -> float:
    return sum(1 for a in attack if a <= t) / len(attack)


def _direct_bpcer(bona: list[float], t: float) -> float:
    return sum(1 for b in bona if b > t) / len(bona)


def _candidates(*groups: list[float]) -> list[float]:
    """Every score, and the float just below each: all places a step function can change."""
    values = {v for g in groups for v in g}
    return sorted(values | {float(np.nextafter(v, -np.inf)) for v in values})


def _direct_bpcer_at_apcer(bona: list[float], attacks: dict[str, list[float]], x: float) -> float:
    feasible = [
        t
        for t in _candidates(bona, *attacks.values())
        if max(_direct_apcer(a, t) for a in attacks.values()) <= x
    ]
    return _direct_bpcer(bona, max(feasible))


def _direct_apcer_at_bpcer(bona: list[float], attacks: dict[str, list[float]], x: float) -> float:
    feasible = [t for t in _candidates(bona, *attacks.values()) if _direct_bpcer(bona, t) <= x]
    t = min(feasible)
    return max(_direct_apcer(a, t) for a in attacks.values())


def _direct_eer(bona: list[float], attack: list[float]) -> float:
    everything = sorted(set(bona) | set(attack))
    thresholds = [float(np.nextafter(everything[0], -np.inf)), *everything]
    best = min(
        thresholds,
        key=lambda t: (abs(_direct_apcer(attack, t) - _direct_bpcer(bona, t)), t),
    )
    return (_direct_apcer(attack, best) + _direct_bpcer(bona, best)) / 2


def _direct_auc(bona: list[float], attack: list[float]) -> float:
    total = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in attack for b in bona)
    return total / (len(attack) * len(bona))


@pytest.fixture
def scored() -> tuple[list[float], dict[str, list[float]]]:
    rng = np.random.default_rng(7)
    # Rounded to two decimals so that ties occur, as with real quantised scores.
    bona = np.round(rng.beta(2, 8, 240), 2).tolist()
    attacks = {
        "print": np.round(rng.beta(6, 3, 90), 2).tolist(),
        "replay": np.round(rng.beta(8, 2, 70), 2).tolist(),
        "mask": np.round(rng.beta(3, 3, 40), 2).tolist(),
    }
    return bona, attacks


def test_fixed_threshold_rates_equal_direct_counts(
    scored: tuple[list[float], dict[str, list[float]]],
) -> None:
    bona, attacks = scored
    t = 0.45
    ev = evaluate_pad(bona, attacks, threshold=t, bootstrap=0)
    for species, scores in attacks.items():
        assert ev.apcer[species].value == pytest.approx(_direct_apcer(scores, t))
        assert ev.n_attacks[species] == len(scores)
    worst = max(attacks, key=lambda s: _direct_apcer(attacks[s], t))
    assert ev.worst_species == worst
    assert ev.apcer_max.value == pytest.approx(_direct_apcer(attacks[worst], t))
    assert ev.bpcer.value == pytest.approx(_direct_bpcer(bona, t))
    assert ev.acer.value == pytest.approx(
        (_direct_apcer(attacks[worst], t) + _direct_bpcer(bona, t)) / 2
    )
    # A score equal to the threshold is not refused (the workers' rule: refused above it).
    at = evaluate_pad([t], {"print": [t]}, threshold=t, bootstrap=0)
    assert at.bpcer.value == 0.0 and at.apcer["print"].value == 1.0


def test_operating_points_equal_a_brute_force_search(
    scored: tuple[list[float], dict[str, list[float]]],
) -> None:
    bona, attacks = scored
    ev = evaluate_pad(bona, attacks, threshold=0.5, bootstrap=0)
    for x in (0.01, 0.05, 0.10):
        point = ev.bpcer_at_apcer[x]
        assert point.value == pytest.approx(_direct_bpcer_at_apcer(bona, attacks, x)), x
        assert point.extra["apcer_max"] <= x
    for x in (0.01, 0.05):
        point = ev.apcer_at_bpcer[x]
        assert point.value == pytest.approx(_direct_apcer_at_bpcer(bona, attacks, x)), x
        assert point.extra["bpcer"] <= x


def test_eer_and_auc_equal_direct_computation(
    scored: tuple[list[float], dict[str, list[float]]],
) -> None:
    bona, attacks = scored
    pooled = [a for scores in attacks.values() for a in scores]
    ev = evaluate_pad(bona, attacks, threshold=0.5, bootstrap=0)
    assert ev.eer.value == pytest.approx(_direct_eer(bona, pooled))
    assert ev.roc_auc.value == pytest.approx(_direct_auc(bona, pooled))
    found = equal_error_rate(np.asarray(bona), np.asarray(pooled))
    assert found is not None and ev.eer.threshold == found[1]


def test_wilson_interval_closed_form() -> None:
    # 0 of 10: the upper bound is z^2 / (n + z^2).
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(Z95**2 / (10 + Z95**2))
    for k, n in ((5, 10), (3, 40), (17, 200)):
        p = k / n
        centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
        half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
        assert wilson_interval(k, n) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)


def test_rate_intervals_are_wilson_of_the_counts(
    scored: tuple[list[float], dict[str, list[float]]],
) -> None:
    bona, attacks = scored
    t = 0.45
    ev = evaluate_pad(bona, attacks, threshold=t, bootstrap=0)
    errors = sum(1 for a in attacks["mask"] if a <= t)
    assert ev.apcer["mask"].ci == pytest.approx(wilson_interval(errors, len(attacks["mask"])))
    refused = sum(1 for b in bona if b > t)
    assert ev.bpcer.ci == pytest.approx(wilson_interval(refused, len(bona)))
    assert ev.bpcer.ci_method == "wilson"


def test_bootstrap_intervals_are_seeded_and_bracket_the_estimate(
    scored: tuple[list[float], dict[str, list[float]]],
) -> None:
    bona, attacks = scored
    a = evaluate_pad(bona, attacks, threshold=0.5, bootstrap=300, seed=3)
    b = evaluate_pad(bona, attacks, threshold=0.5, bootstrap=300, seed=3)
    c = evaluate_pad(bona, attacks, threshold=0.5, bootstrap=300, seed=4)
    assert a.as_dict() == b.as_dict()
    assert a.eer.ci != c.eer.ci
    for estimate in (a.eer, a.roc_auc, a.acer, a.bpcer_at_apcer[0.10], a.apcer_at_bpcer[0.05]):
        assert estimate.ci is not None and estimate.value is not None
        low, high = estimate.ci
        assert low <= high
        assert low - 0.02 <= estimate.value <= high + 0.02
        assert estimate.ci_method == "bootstrap"


def test_support_follows_the_rule_of_three() -> None:
    assert rule_of_three(0.01) == 300 and rule_of_three(0.05) == 60 and rule_of_three(0.1) == 30
    rng = np.random.default_rng(1)
    bona = rng.uniform(0, 0.5, 100).tolist()
    attacks = {
        "print": rng.uniform(0.4, 1, 60).tolist(),
        "replay": rng.uniform(0.4, 1, 29).tolist(),
    }
    ev = evaluate_pad(bona, attacks, threshold=0.5, bootstrap=0)
    assert ev.apcer["print"].supported and not ev.apcer["replay"].supported
    assert not ev.apcer_max.supported and not ev.acer.supported
    assert ev.bpcer.supported
    assert not ev.bpcer_at_apcer[0.10].supported  # replay has 29 < 30 attacks
    assert ev.apcer_at_bpcer[0.05].supported is False  # replay < 30
    assert ev.eer.supported and ev.roc_auc.supported  # 100 bona fide, 89 pooled attacks
    attacks["replay"] = rng.uniform(0.4, 1, 60).tolist()
    ev = evaluate_pad(bona, attacks, threshold=0.5, bootstrap=0)
    assert ev.bpcer_at_apcer[0.05].supported and ev.bpcer_at_apcer[0.10].supported
    assert not ev.bpcer_at_apcer[0.01].supported
    assert "300" in (ev.bpcer_at_apcer[0.01].reason or "")
    assert ev.apcer_at_bpcer[0.05].supported and not ev.apcer_at_bpcer[0.01].supported
    assert ev.as_dict()["support_rules"]["min_rate_samples"] == MIN_RATE_SAMPLES


def test_tiny_sets_are_reported_but_unsupported() -> None:
    ev = evaluate_pad([0.1], {"print": [0.7], "replay": [0.99]}, threshold=0.6, bootstrap=50)
    report = ev.as_dict()
    for key in ("bpcer", "acer", "eer", "roc_auc"):
        assert report[key]["supported"] is False and report[key]["unsupported_reason"]
    assert report["apcer"]["print"]["value"] == 0.0
    assert report["apcer"]["print"]["ci_high"] == pytest.approx(Z95**2 / (1 + Z95**2))
    assert report["roc_auc"]["value"] == 1.0
    # One attack per species: a bootstrap would only repeat it, so no interval is claimed.
    assert report["eer"]["ci_low"] is None and report["acer"]["ci_high"] is None
    assert report["eer"]["ci_method"].startswith("none")


def test_missing_classes_give_no_numbers_rather_than_errors() -> None:
    only_attacks = evaluate_pad([], {"print": [0.8, 0.9]}, threshold=0.5, bootstrap=10)
    assert only_attacks.bpcer.value is None and only_attacks.eer.value is None
    assert only_attacks.apcer["print"].value == 0.0
    only_bona = evaluate_pad([0.1, 0.2], {}, threshold=0.5, bootstrap=10)
    assert only_bona.apcer_max.value is None and only_bona.worst_species is None
    assert only_bona.bpcer.value == 0.0
    assert roc_auc(np.array([]), np.array([0.5])) is None


def test_threshold_helpers_at_their_edges() -> None:
    attacks = {"print": np.array([0.2, 0.4, 0.6, 0.8])}
    # 25 % allowed: one attack may pass, so the threshold sits just below the second.
    t = threshold_at_apcer(attacks, 0.25)
    assert t is not None and t < 0.4 and np.nextafter(t, np.inf) == 0.4
    bona = np.array([0.1, 0.3, 0.5, 0.7])
    assert threshold_at_bpcer(bona, 0.25) == 0.5  # 0.7 alone is above it
    with pytest.raises(ValueError):
        threshold_at_bpcer(bona, 0.0)
    with pytest.raises(ValueError):
        evaluate_pad([float("nan")], {}, threshold=0.5)
