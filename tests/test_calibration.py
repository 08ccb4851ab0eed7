"""Threshold calibration: scores, thresholds, error rates, report, plots, directory walk.

All synthetic: hand-made score lists whose percentiles / EER / AUC are known, checked
against direct numpy computation (``np.percentile(..., method="linear")``, brute-force
pair counts), plus seeded random "property" checks against brute force.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from matplotlib.image import imread

from shared.calibration import (
    CalibrationReport,
    FallbackStrategy,
    SkipImage,
    SkippedImage,
    band_thresholds,
    build_report,
    calibrate_directory,
    compute_scores,
    equal_error_rate,
    failure_to_acquire,
    generalized_fnmr,
    roc_auc,
    summarise,
    threshold_at_fmr,
)
from shared.calibration.plots import DET_FILE, HISTOGRAM_FILE, write_plots
from shared.calibration.thresholds import det_curve, fmr_at, fnmr_at
from shared.errors import ErrorCode, FaceauthError, TransientError

FloatArray = npt.NDArray[np.float64]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def unit(*values: float) -> FloatArray:
    v = np.asarray(values, dtype=np.float64)
    return np.asarray(v / np.linalg.norm(v), dtype=np.float64)


def synthetic_people(
    persons: int, per_person: int, dim: int = 32, noise: float = 0.6, seed: int = 1
) -> dict[str, FloatArray]:
    """Each person: a random unit centre plus isotropic noise, re-normalised."""
    rng = np.random.default_rng(seed)
    out: dict[str, FloatArray] = {}
    for p in range(persons):
        centre = rng.normal(size=dim)
        centre /= np.linalg.norm(centre)
        rows = centre + noise * rng.normal(size=(per_person, dim)) / math.sqrt(dim)
        out[f"person{p:02d}"] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


# --- T_low / T_high rule ----------------------------------------------------------------------


def test_band_thresholds_are_the_documented_percentiles() -> None:
    impostor = np.arange(101) * 0.004  # 0.000 .. 0.400
    genuine = 0.5 + np.arange(11) * 0.005  # 0.500 .. 0.550
    band = band_thresholds(genuine, impostor)
    # method="linear": P99 of 101 points is element 99, P10 of 11 points is element 1.
    assert band.t_low == pytest.approx(0.396)
    assert band.t_high == pytest.approx(0.505)
    assert band.t_low == float(np.percentile(impostor, 99, method="linear"))
    assert band.t_high == float(np.percentile(genuine, 10, method="linear"))
    assert not band.fallback_used
    assert band.fallback_reason is None


def test_band_thresholds_interpolate_between_scores() -> None:
    impostor = np.array([0.0, 0.1, 0.2, 0.3, 1.0])  # P99 at position 3.96: 0.3 + 0.96 * 0.7
    genuine = np.array([0.5, 0.9, 0.95])  # P10 at position 0.2: 0.5 + 0.2 * 0.4
    band = band_thresholds(genuine, impostor, fallback=FallbackStrategy.EER)
    assert band.raw_t_low == pytest.approx(0.972)
    assert band.raw_t_high == pytest.approx(0.58)
    assert band.fallback_used  # 0.972 > 0.58


def test_crossing_swaps_thresholds_by_default() -> None:
    genuine = np.linspace(0.2, 0.8, 50)
    impostor = np.linspace(0.0, 0.6, 200)
    raw_low = float(np.percentile(impostor, 99, method="linear"))
    raw_high = float(np.percentile(genuine, 10, method="linear"))
    assert raw_low > raw_high  # the premise: the rule crosses

    band = band_thresholds(genuine, impostor)
    assert band.fallback_used
    assert band.fallback_strategy is FallbackStrategy.SWAP
    assert (band.t_low, band.t_high) == (raw_high, raw_low)
    assert (band.raw_t_low, band.raw_t_high) == (raw_low, raw_high)
    assert band.fallback_reason is not None and "overlap" in band.fallback_reason
    # Both of the rule's bounds still hold after the swap.
    assert fmr_at(impostor, band.t_high) <= 0.01 + 1e-12
    assert fnmr_at(genuine, band.t_low) <= 0.10 + 1e-12


def test_crossing_with_eer_fallback_sets_both_to_the_eer_threshold() -> None:
    genuine = np.linspace(0.2, 0.8, 50)
    impostor = np.linspace(0.0, 0.6, 200)
    band = band_thresholds(genuine, impostor, fallback=FallbackStrategy.EER)
    eer = equal_error_rate(genuine, impostor)
    assert band.fallback_used and band.fallback_strategy is FallbackStrategy.EER
    assert band.t_low == band.t_high == eer.threshold


# --- threshold at a target FMR ----------------------------------------------------------------


def test_threshold_at_fmr_is_the_smallest_threshold_meeting_the_target() -> None:
    impostor = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    genuine = np.array([0.95, 0.99, 0.995, 0.9995])
    r = threshold_at_fmr(genuine, impostor, 1e-2)
    assert r.supported and r.reason is None
    assert r.threshold == np.nextafter(0.989, np.inf)
    assert r.fmr == pytest.approx(0.01)  # the ten scores 0.990 .. 0.999
    assert fmr_at(impostor, 0.989) > 0.01  # one float lower breaks the target: minimal
    assert r.fnmr == pytest.approx(0.25)  # 0.95 < t

    r3 = threshold_at_fmr(genuine, impostor, 1e-3)
    assert r3.supported  # exactly 1 / 1e-3 impostor pairs is enough
    assert r3.threshold == np.nextafter(0.998, np.inf)
    assert r3.fmr == pytest.approx(0.001)


def test_unsupported_fmr_target_says_so_and_still_gives_the_empirical_value() -> None:
    impostor = np.arange(1000) / 1000.0
    r = threshold_at_fmr([0.9], impostor, 1e-4)
    assert not r.supported
    assert r.reason is not None and "10000" in r.reason and "1000 impostor pairs" in r.reason
    assert r.threshold == np.nextafter(0.999, np.inf)
    assert r.fmr == 0.0
    assert r.impostor_pairs == 1000


def test_threshold_at_fmr_with_no_impostors_is_null() -> None:
    r = threshold_at_fmr([0.9], [], 1e-2)
    assert r.threshold is None and not r.supported and r.fmr is None


def test_threshold_at_fmr_excludes_ties_at_the_boundary() -> None:
    impostor = np.array([0.5] * 5 + [0.1] * 95)
    r = threshold_at_fmr([0.9], impostor, 0.02)  # 2 may pass, but 5 tie at 0.5
    assert r.threshold == np.nextafter(0.5, np.inf)
    assert r.fmr == 0.0


@pytest.mark.parametrize("seed", range(20))
def test_threshold_at_fmr_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    impostor = np.round(rng.normal(0.1, 0.1, size=int(rng.integers(100, 600))), 2)  # ties
    genuine = np.round(rng.normal(0.6, 0.1, size=40), 2)
    target = float(rng.choice([0.01, 0.02, 0.05, 0.1]))
    # FMR only changes at a score, so the smallest float meeting the target is a score
    # or the float just above one.
    candidates = np.unique(np.concatenate([impostor, np.nextafter(impostor, np.inf)]))
    meets = [t for t in candidates if np.mean(impostor >= t) <= target]
    r = threshold_at_fmr(genuine, impostor, target)
    assert r.threshold == min(meets)
    assert r.fmr == np.mean(impostor >= r.threshold)
    assert r.fnmr == np.mean(genuine < r.threshold)


# --- EER and ROC-AUC --------------------------------------------------------------------------


def test_eer_when_rates_meet_on_a_score() -> None:
    genuine = [0.6, 0.7, 0.8, 0.9]
    impostor = [0.1, 0.2, 0.3, 0.65]
    # At t = 0.65: FMR = 1/4 (0.65 >= t), FNMR = 1/4 (0.6 < t).
    eer = equal_error_rate(genuine, impostor)
    assert eer.eer == 0.25
    assert eer.threshold == 0.65


def test_eer_interpolates_between_scores() -> None:
    genuine = [0.4, 0.8, 0.9]
    impostor = [0.1, 0.5]
    # t=0.5: FMR 1/2, FNMR 1/3; t=0.8: FMR 0, FNMR 1/3. FMR-FNMR goes 1/6 -> -1/3, so the
    # crossing is a third of the way: rate 1/3 at threshold 0.6.
    eer = equal_error_rate(genuine, impostor)
    assert eer.eer == pytest.approx(1 / 3)
    assert eer.threshold == pytest.approx(0.6)


def test_eer_is_zero_when_perfectly_separated() -> None:
    eer = equal_error_rate([0.5, 0.7], [0.1, 0.3])
    assert eer.eer == 0.0
    assert 0.3 < eer.threshold <= 0.5


@pytest.mark.parametrize("seed", range(20))
def test_eer_lies_between_the_bracketing_rates(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    genuine = np.round(rng.normal(0.5, 0.15, size=int(rng.integers(5, 80))), 2)
    impostor = np.round(rng.normal(0.2, 0.15, size=int(rng.integers(5, 300))), 2)
    eer = equal_error_rate(genuine, impostor).eer
    curve = det_curve(genuine, impostor)
    # Monotone FMR / FNMR: no threshold does better than EER on both, none worse on both.
    assert np.max(np.minimum(curve.fmr, curve.fnmr)) - 1e-12 <= eer
    assert eer <= np.min(np.maximum(curve.fmr, curve.fnmr)) + 1e-12


def test_roc_auc_known_values() -> None:
    assert roc_auc([0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.65]) == 15 / 16
    assert roc_auc([0.5], [0.5]) == 0.5  # a tie counts half
    assert roc_auc([0.9, 0.8], [0.1]) == 1.0
    assert roc_auc([0.1], [0.9, 0.8]) == 0.0


@pytest.mark.parametrize("seed", range(20))
def test_roc_auc_matches_brute_force_mann_whitney(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    genuine = np.round(rng.normal(0.5, 0.2, size=int(rng.integers(1, 60))), 1)
    impostor = np.round(rng.normal(0.3, 0.2, size=int(rng.integers(1, 200))), 1)
    greater = genuine[:, None] > impostor[None, :]
    equal = genuine[:, None] == impostor[None, :]
    assert roc_auc(genuine, impostor) == pytest.approx(greater.mean() + 0.5 * equal.mean())


def test_summary_operating_points_match_direct_rates() -> None:
    people = synthetic_people(persons=12, per_person=4)
    scores = compute_scores(people)
    summary = summarise(scores.genuine.scores, scores.impostor.scores)
    gen, imp = scores.genuine.scores, scores.impostor.scores
    names = [p.name for p in summary.operating_points]
    assert names[:3] == ["t_low", "t_high", "eer"]
    for point in summary.operating_points:
        assert point.fmr == np.mean(imp >= point.threshold)
        assert point.fnmr == np.mean(gen < point.threshold)
    assert [t.target for t in summary.fmr_targets] == [1e-2, 1e-3, 1e-4]
    # 12 persons x 4 images: 1056 impostor pairs, enough for 1e-2 and 1e-3 only.
    assert len(imp) == (48 * 48 - 12 * 16) // 2 == 1056
    assert [t.supported for t in summary.fmr_targets] == [True, True, False]


# --- scores -----------------------------------------------------------------------------------


def test_compute_scores_enumerates_labelled_pairs() -> None:
    people = {
        "ann": np.stack([unit(1, 0, 0), unit(1, 1, 0), unit(1, 0, 1)]),
        "bob": np.stack([unit(0, 1, 0), unit(0, 1, 1)]),
        "cy": np.stack([unit(0, 0, 1)]),
    }
    names = {"ann": ["ann/a.jpg", "ann/b.jpg", "ann/c.jpg"], "bob": ["bob/a.jpg", "bob/b.jpg"]}
    s = compute_scores(people, item_names=names)
    assert s.persons == ["ann", "bob", "cy"]
    assert s.items == ["ann/a.jpg", "ann/b.jpg", "ann/c.jpg", "bob/a.jpg", "bob/b.jpg", "cy/0"]
    flat = np.concatenate(list(people.values()))
    assert len(s.genuine) == 3 + 1  # C(3,2) + C(2,2)
    assert len(s.impostor) == s.impostor_total_pairs == (36 - 9 - 4 - 1) // 2
    for pairs, same_person in ((s.genuine, True), (s.impostor, False)):
        for (i, j), score in zip(pairs.pairs, pairs.scores, strict=True):
            assert i < j
            assert (s.item_person[i] == s.item_person[j]) == same_person
            assert score == pytest.approx(flat[i] @ flat[j])
    assert len({tuple(p) for p in s.impostor.pairs}) == len(s.impostor)
    assert s.genuine.scores[0] == pytest.approx(1 / math.sqrt(2))  # ann/a vs ann/b

    # Mean templates: L2-normalised mean per person, one score per pair of persons.
    templates = [m.mean(axis=0) / np.linalg.norm(m.mean(axis=0)) for m in people.values()]
    assert s.mean_template_impostor.pairs.tolist() == [[0, 1], [0, 2], [1, 2]]
    expected = [
        templates[0] @ templates[1],
        templates[0] @ templates[2],
        templates[1] @ templates[2],
    ]
    np.testing.assert_allclose(s.mean_template_impostor.scores, expected)


def test_compute_scores_samples_cross_person_pairs_when_capped() -> None:
    people = synthetic_people(persons=10, per_person=5)
    full = compute_scores(people)
    capped = compute_scores(people, max_pairs=100, seed=7)
    assert capped.impostor_total_pairs == len(full.impostor) == (50 * 50 - 10 * 25) // 2
    assert len(capped.impostor) == 100 and capped.impostor_sampled
    assert len(capped.genuine) == len(full.genuine)  # genuine pairs are never sampled
    full_lookup = {
        tuple(p): sc
        for p, sc in zip(full.impostor.pairs.tolist(), full.impostor.scores, strict=True)
    }
    sampled = [tuple(p) for p in capped.impostor.pairs.tolist()]
    assert len(set(sampled)) == 100 and sampled == sorted(sampled)
    for pair, score in zip(sampled, capped.impostor.scores, strict=True):
        assert score == pytest.approx(full_lookup[pair])
    assert len(capped.mean_template_impostor) == 45  # 45 <= 100: not sampled
    again = compute_scores(people, max_pairs=100, seed=7)
    assert again.impostor.pairs.tolist() == capped.impostor.pairs.tolist()  # reproducible


def test_compute_scores_rejects_unnormalised_or_mismatched_input() -> None:
    with pytest.raises(ValueError, match="L2-normalised"):
        compute_scores({"a": np.array([[3.0, 4.0]]), "b": np.array([[1.0, 0.0]])})
    with pytest.raises(ValueError, match="dimension"):
        compute_scores({"a": np.array([[1.0, 0.0]]), "b": np.array([[1.0, 0.0, 0.0]])})


# --- report -----------------------------------------------------------------------------------


def test_report_holds_everything_and_round_trips_through_json() -> None:
    people = synthetic_people(persons=6, per_person=3)
    report = build_report(people, model_name="facepack-test", model_version="w128-test")
    gen = np.array(report.genuine_scores)
    imp = np.array(report.impostor_scores)
    assert report.counts.genuine_pairs == len(gen) == 6 * 3
    assert report.counts.impostor_pairs == len(imp) == (18 * 18 - 6 * 9) // 2
    assert report.counts.mean_template_pairs == len(report.mean_template_impostor_scores) == 15
    assert report.t_low == float(np.percentile(imp, 99, method="linear"))
    assert report.t_high == float(np.percentile(gen, 10, method="linear"))
    assert report.roc_auc == roc_auc(gen, imp)
    assert report.eer == equal_error_rate(gen, imp).eer
    assert report.genuine_stats.max == gen.max()
    assert report.created_at.tzinfo is not None
    unsupported = [t for t in report.fmr_targets if not t.supported]
    assert [t.target for t in unsupported] == [1e-3, 1e-4]  # only 135 impostor pairs

    text = report.to_json()
    parsed = json.loads(text)
    assert parsed["model_version"] == "w128-test"
    assert parsed["fallback"]["used"] is False
    assert CalibrationReport.from_json(text) == report


def test_report_write_and_read(tmp_path: Path) -> None:
    report = build_report(synthetic_people(4, 3), model_name="m", model_version="v1")
    path = tmp_path / "report.json"
    report.write(path)
    assert CalibrationReport.read(path) == report
    assert not (tmp_path / "report.json.tmp").exists()


def test_report_records_the_crossing_fallback() -> None:
    # Very noisy embeddings: genuine and impostor distributions overlap.
    people = synthetic_people(persons=8, per_person=4, noise=6.0, seed=3)
    report = build_report(people, model_name="m", model_version="v1")
    assert report.fallback.used
    assert report.fallback.strategy is FallbackStrategy.SWAP
    assert report.fallback.raw_t_low > report.fallback.raw_t_high
    assert report.t_low == report.fallback.raw_t_high
    assert report.t_high == report.fallback.raw_t_low
    assert json.loads(report.to_json())["fallback"]["strategy"] == "swap"


def test_report_needs_genuine_and_impostor_pairs() -> None:
    with pytest.raises(FaceauthError) as one_person:
        build_report({"a": synthetic_people(1, 3)["person00"]}, model_name="m", model_version="v")
    assert one_person.value.code is ErrorCode.CALIBRATION_INSUFFICIENT_DATA
    with pytest.raises(FaceauthError, match="no embeddings"):
        build_report({"a": np.empty((0, 8))}, model_name="m", model_version="v")
    singles = {name: rows[:1] for name, rows in synthetic_people(3, 2).items()}
    with pytest.raises(FaceauthError, match="no genuine pairs"):
        build_report(singles, model_name="m", model_version="v")


# --- plots ------------------------------------------------------------------------------------


def test_plots_are_valid_pngs(tmp_path: Path) -> None:
    report = build_report(synthetic_people(10, 4), model_name="m", model_version="v1")
    files = write_plots(report, tmp_path / "plots")
    assert files.histogram == tmp_path / "plots" / HISTOGRAM_FILE
    assert files.det_curve == tmp_path / "plots" / DET_FILE
    for path in (files.histogram, files.det_curve):
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        pixels = imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert float(pixels[..., :3].std()) > 0.01  # something was drawn


def test_plots_survive_the_crossing_case(tmp_path: Path) -> None:
    people = synthetic_people(persons=8, per_person=4, noise=6.0, seed=3)
    report = build_report(people, model_name="m", model_version="v1")
    files = write_plots(report, tmp_path)
    assert files.det_curve.read_bytes()[:8] == PNG_SIGNATURE


# --- directory --------------------------------------------------------------------------------


def _photo_tree(root: Path) -> dict[str, FloatArray]:
    """Files whose *names* pick a synthetic embedding: the embedder never decodes them."""
    people = synthetic_people(persons=4, per_person=3, seed=5)
    lookup: dict[str, FloatArray] = {}
    for person, rows in people.items():
        (root / person).mkdir(parents=True)
        for k, row in enumerate(rows):
            name = f"{person}_{k}.jpg"
            (root / person / name).write_bytes(b"not decoded")
            lookup[name] = row * 7.5  # raw recognizer scale: calibrate_directory normalises
    (root / "person00" / "blurry.jpg").write_bytes(b"x")
    (root / "person01" / "noface.png").write_bytes(b"x")
    (root / "person02" / "skip.jpeg").write_bytes(b"x")
    (root / "person02" / "notes.txt").write_text("hello")
    (root / "person03" / ".DS_Store").write_bytes(b"x")
    (root / "stray.jpg").write_bytes(b"x")
    return lookup


def test_calibrate_directory_embeds_and_records_skips(tmp_path: Path) -> None:
    lookup = _photo_tree(tmp_path)
    seen: list[str] = []

    def embed(path: Path) -> FloatArray | SkipImage | None:
        seen.append(path.name)
        if path.name == "blurry.jpg":
            raise FaceauthError(ErrorCode.QUALITY_REJECTED, "face too blurry", variance=2.0)
        if path.name == "skip.jpeg":
            return SkipImage(reason="two faces", code="multiple_faces")
        return lookup.get(path.name)  # None for noface.png

    report = calibrate_directory(
        tmp_path, embed, model_name="facepack-test", model_version="v1", progress=False
    )
    assert report.persons == ["person00", "person01", "person02", "person03"]
    assert report.items[:3] == [
        "person00/person00_0.jpg",
        "person00/person00_1.jpg",
        "person00/person00_2.jpg",
    ]
    assert report.counts.images == 12 and report.counts.genuine_pairs == 4 * 3
    assert ".DS_Store" not in seen and "notes.txt" not in seen and "stray.jpg" not in seen
    skipped = {s.item: s for s in report.skipped}
    assert set(skipped) == {
        "stray.jpg",
        "person02/notes.txt",
        "person00/blurry.jpg",
        "person01/noface.png",
        "person02/skip.jpeg",
    }
    assert skipped["person00/blurry.jpg"].code == "quality_rejected"
    assert skipped["person00/blurry.jpg"].reason == "face too blurry"
    assert skipped["person02/skip.jpeg"].code == "multiple_faces"
    assert skipped["person01/noface.png"].reason == "no usable face"
    assert report.counts.images_skipped == 5
    assert report.source == str(tmp_path)

    # Same numbers as calibrating the (normalised) embeddings directly.
    people = synthetic_people(persons=4, per_person=3, seed=5)
    direct = build_report(people, model_name="facepack-test", model_version="v1")
    np.testing.assert_allclose(report.genuine_scores, direct.genuine_scores)
    np.testing.assert_allclose(report.impostor_scores, direct.impostor_scores)
    assert report.t_low == pytest.approx(direct.t_low)
    assert report.t_high == pytest.approx(direct.t_high)


def test_calibrate_directory_lets_transient_errors_through(tmp_path: Path) -> None:
    _photo_tree(tmp_path)

    def embed(path: Path) -> FloatArray | None:
        raise TransientError(ErrorCode.STORAGE_UNAVAILABLE, "disk went away")

    with pytest.raises(TransientError):
        calibrate_directory(tmp_path, embed, model_name="m", model_version="v", progress=False)


def test_calibrate_directory_with_too_little_data(tmp_path: Path) -> None:
    (tmp_path / "solo").mkdir()
    (tmp_path / "solo" / "a.jpg").write_bytes(b"x")

    def embed(path: Path) -> FloatArray:
        return unit(1, 0)

    with pytest.raises(FaceauthError) as err:
        calibrate_directory(tmp_path, embed, model_name="m", model_version="v", progress=False)
    assert err.value.code is ErrorCode.CALIBRATION_INSUFFICIENT_DATA


# --- failure to acquire and the generalized FNMR ----------------------------------------------


def _fta_tree(root: Path) -> dict[str, FloatArray]:
    """Two persons, 4 usable photos, 3 refused ones, and 2 files that are no attempt at all."""
    vectors = {
        "a1.jpg": unit(1, 0, 0),
        "a2.jpg": unit(0.8, 0.6, 0),  # genuine score a1.a2 = 0.8
        "b1.jpg": unit(0, 0, 1),
        "b2.jpg": unit(0, 0.8, 0.6),  # genuine score b1.b2 = 0.6
    }
    for name in (*vectors, "a_blurry.jpg", "a_broken.jpg", "b_masked.jpg"):
        folder = root / ("alice" if name.startswith("a") else "bob")
        folder.mkdir(exist_ok=True)
        (folder / name).write_bytes(b"x")
    (root / "alice" / "notes.txt").write_text("not an image")
    (root / "stray.jpg").write_bytes(b"x")
    return vectors


def test_calibration_reports_failure_to_acquire_and_generalized_fnmr(tmp_path: Path) -> None:
    vectors = _fta_tree(tmp_path)

    def embed(path: Path) -> FloatArray | SkipImage:
        if path.name == "a_blurry.jpg":  # the gate lists every failed check
            return SkipImage("blurry and dark", "too_blurry", codes=("too_blurry", "too_dark"))
        if path.name == "a_broken.jpg":
            raise FaceauthError(ErrorCode.IMAGE_TRUNCATED, "cut short")
        if path.name == "b_masked.jpg":
            return SkipImage("mouth covered", "mask", codes=("mask",))
        return vectors[path.name]

    report = calibrate_directory(tmp_path, embed, model_name="m", model_version="v", progress=False)
    fta = report.failure_to_acquire
    assert fta is not None
    # 7 images in person folders were presented; 3 could not be used. notes.txt and
    # stray.jpg are not attempts.
    assert (fta.attempts, fta.failures) == (7, 3)
    assert fta.rate == pytest.approx(3 / 7)
    assert [(r.code, r.count) for r in fta.by_reason] == [
        ("image_truncated", 1),
        ("mask", 1),
        ("too_blurry", 1),
        ("too_dark", 1),
    ]
    assert all(r.rate == pytest.approx(1 / 7) for r in fta.by_reason)
    skipped = {s.item: s for s in report.skipped}
    assert skipped["alice/a_blurry.jpg"].codes == ["too_blurry", "too_dark"]
    assert skipped["alice/a_blurry.jpg"].attempted and not skipped["stray.jpg"].attempted

    # Genuine scores 0.8 and 0.6: t_high = P10 = 0.62 refuses one of the two accepted pairs
    # (FNMR 1/2); the generalized FNMR adds the failures: 3/7 + 4/7 * 1/2 = 5/7.
    points = {p.name: p for p in report.operating_points}
    assert points["t_high"].threshold == pytest.approx(0.62)
    assert points["t_high"].fnmr == 0.5
    assert points["t_high"].gfnmr == pytest.approx(5 / 7)
    # At t_low every accepted genuine pair matches: only the failures to acquire remain.
    assert points["t_low"].fnmr == 0.0
    assert points["t_low"].gfnmr == pytest.approx(3 / 7)
    for point in report.operating_points:
        assert point.gfnmr == pytest.approx(3 / 7 + 4 / 7 * point.fnmr)
    for target in report.fmr_targets:
        assert target.fnmr is not None
        assert target.gfnmr == pytest.approx(3 / 7 + 4 / 7 * target.fnmr)
    # The JSON report carries it all.
    again = CalibrationReport.from_json(report.to_json())
    assert again.failure_to_acquire == fta
    assert json.loads(report.to_json())["failure_to_acquire"]["rate"] == pytest.approx(3 / 7)


def test_generalized_fnmr_formula() -> None:
    assert generalized_fnmr(0.0, 0.0) == 0.0
    assert generalized_fnmr(0.1, 0.0) == pytest.approx(0.1)
    assert generalized_fnmr(0.0, 0.2) == pytest.approx(0.2)
    assert generalized_fnmr(0.1, 0.2) == pytest.approx(0.28)  # 0.2 + 0.8 * 0.1
    assert generalized_fnmr(1.0, 0.3) == pytest.approx(1.0)


def test_failure_to_acquire_without_failures_and_from_stored_templates() -> None:
    none_failed = failure_to_acquire([], attempts=12)
    assert (none_failed.failures, none_failed.rate, none_failed.by_reason) == (0, 0.0, [])
    unknown = failure_to_acquire(
        [SkippedImage(item="p/x.jpg", reason="no usable face", attempted=True)], attempts=2
    )
    assert [(r.code, r.count, r.rate) for r in unknown.by_reason] == [("unusable", 1, 0.5)]
    with pytest.raises(ValueError, match="attempts"):
        failure_to_acquire([SkippedImage(item="x", reason="r", attempted=True)], attempts=0)
    # Templates from the database carry no failures to acquire: the report says so.
    report = build_report(synthetic_people(3, 3), model_name="m", model_version="v")
    assert report.failure_to_acquire is None
    assert all(p.gfnmr is None for p in report.operating_points)
