"""``faceauth liveness evaluate`` on a small labelled folder built from the shared photos.

The numbers in its report must equal a direct computation in this test: each photo scored
here with the detector and the liveness model, the ISO/IEC 30107-3 rates counted by hand.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from shared.config import get_settings
from shared.errors import FaceauthError
from shared.imaging import decode_image
from workers.cli.liveness import app as liveness_cli

SHARED = Path(
    os.environ.get("FACEAUTH_SHARED_DIR") or Path(__file__).resolve().parents[1] / ".." / "shared"
).resolve()
MINIFASNET = SHARED / "models" / "liveness" / "minifasnet"
FACE_PACK = SHARED / "models" / "facepack-test"
FACES = SHARED / "faces"
THRESHOLD = 0.3
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.skipif(
    not MINIFASNET.is_dir() or not FACE_PACK.is_dir(), reason=f"shared assets missing: {SHARED}"
)


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("FACEAUTH_") and key != "FACEAUTH_SHARED_DIR":
            monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def pad_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """live/ (with one photo without a face and one that is not an image) and spoof/<species>/."""
    root = tmp_path_factory.mktemp("padset")
    files = {
        "live": [
            FACES / "pad" / "live" / "image_T1.jpg",
            *sorted((FACES / "identities" / "obama").iterdir()),
            *sorted((FACES / "identities" / "biden").iterdir()),
            FACES / "identities" / "kit_harington" / "john2.jpeg",
            FACES / "edge" / "mask_black.jpg",  # the detector finds no face
        ],
        "spoof/print": [FACES / "pad" / "print" / "image_F1.jpg"],
        "spoof/replay": [FACES / "pad" / "replay" / "image_F2.jpg"],
    }
    for folder, paths in files.items():
        (root / folder).mkdir(parents=True)
        for path in paths:
            shutil.copy(path, root / folder / path.name)
    (root / "live" / "broken.jpg").write_bytes(b"this is not a JPEG")
    return root


def _direct_scores(root: Path) -> dict[str, tuple[str, float | None, str | None]]:
    """relative path -> (group, spoof score or None, failure code or None), computed here."""
    from workers.inference.face_pack import FacePack
    from workers.inference.liveness import LivenessScorer

    settings = get_settings()
    scorer = LivenessScorer.load(MINIFASNET)
    pack = FacePack.load(
        FACE_PACK,
        det_size=settings.face_det_size,
        providers=settings.ort_providers,
        det_thresh=settings.min_det_score,
    )
    out: dict[str, tuple[str, float | None, str | None]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        group = "bona_fide" if rel.parts[0] == "live" else rel.parts[1]
        try:
            image = decode_image(
                path.read_bytes(),
                max_bytes=settings.max_image_bytes,
                max_pixels=settings.max_image_pixels,
            ).pixels
        except FaceauthError as exc:
            out[str(rel)] = (group, None, str(exc.code))
            continue
        faces = pack.detect(image)
        if not faces:
            out[str(rel)] = (group, None, "no_face")
            continue
        largest = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
        score = scorer.score(image, [list(largest.bbox)])[0].spoof_score
        out[str(rel)] = (group, float(score), None)
    return out


@pytest.fixture(scope="module")
def direct(pad_set: Path) -> dict[str, tuple[str, float | None, str | None]]:
    return _direct_scores(pad_set)


def _run(*args: str) -> Any:
    return CliRunner().invoke(
        liveness_cli,
        [
            "evaluate",
            *args,
            "--model-dir",
            str(MINIFASNET),
            "--face-pack",
            str(FACE_PACK),
            "--no-progress",
        ],
    )


def _groups(
    direct: dict[str, tuple[str, float | None, str | None]],
) -> tuple[list[float], dict[str, list[float]]]:
    bona = [s for g, s, _ in direct.values() if g == "bona_fide" and s is not None]
    attacks: dict[str, list[float]] = {}
    for g, s, _ in direct.values():
        if g != "bona_fide" and s is not None:
            attacks.setdefault(g, []).append(s)
    return bona, attacks


def test_report_numbers_equal_a_direct_computation(
    pad_set: Path, direct: dict[str, tuple[str, float | None, str | None]], tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    result = _run(str(pad_set), "--out", str(out), "--threshold", str(THRESHOLD))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())

    # Every photo is in the report: scored, or a failure to acquire with its reason.
    by_path = {str(Path(s["path"]).relative_to(pad_set)): s for s in report["samples"]}
    assert set(by_path) == set(direct)
    for rel, (_, score, failure) in direct.items():
        if score is None:
            assert by_path[rel]["spoof_score"] is None
            assert by_path[rel]["failure"]["code"] == failure
        else:
            assert by_path[rel]["spoof_score"] == pytest.approx(score, abs=1e-6)

    bona, attacks = _groups(direct)
    b, t = np.array(bona), THRESHOLD
    apcer = {s: float(np.mean(np.array(a) <= t)) for s, a in attacks.items()}
    bpcer = float(np.mean(b > t))
    m = report["metrics"]
    assert m["threshold"] == t
    assert m["n_bona_fide"] == len(bona) == 7  # 9 live files, 2 failures to acquire
    assert m["n_attacks"] == {"print": 1, "replay": 1}
    for species, rate in apcer.items():
        assert m["apcer"][species]["value"] == pytest.approx(rate)
    assert m["apcer_max"]["value"] == pytest.approx(max(apcer.values()))
    assert m["bpcer"]["value"] == pytest.approx(bpcer)
    assert bpcer > 0  # john2.jpeg scores about 0.5: refused at 0.3
    assert m["acer"]["value"] == pytest.approx((max(apcer.values()) + bpcer) / 2)
    pooled = np.array([s for a in attacks.values() for s in a])
    auc = np.mean([1.0 if x > y else 0.5 if x == y else 0.0 for x in pooled for y in b])
    assert m["roc_auc"]["value"] == pytest.approx(float(auc))
    # EER: the candidate threshold where |APCER - BPCER| is smallest, lowest on a tie.
    cands = np.concatenate(
        [
            [np.nextafter(min(b.min(), pooled.min()), -np.inf)],
            np.unique(np.concatenate([b, pooled])),
        ]
    )
    gaps = [abs(np.mean(pooled <= c) - np.mean(b > c)) for c in cands]
    best = cands[int(np.argmin(gaps))]
    assert m["eer"]["value"] == pytest.approx((np.mean(pooled <= best) + np.mean(b > best)) / 2)
    # BPCER at APCER 10 %: with one attack per species none may pass, so the threshold sits
    # just below the lowest attack score.
    below = np.nextafter(pooled.min(), -np.inf)
    assert m["bpcer_at_apcer"]["10%"]["value"] == pytest.approx(float(np.mean(b > below)))
    # The set is tiny: nothing is supported, and the report says so instead of hiding it.
    for key in ("bpcer", "apcer_max", "acer", "eer", "roc_auc"):
        assert m[key]["supported"] is False, key
    assert all(not e["supported"] for e in m["bpcer_at_apcer"].values())
    # Wilson interval of BPCER from the counts.
    z = 1.959963984540054
    n, p = len(bona), bpcer
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert m["bpcer"]["ci_low"] == pytest.approx(centre - half)
    assert m["bpcer"]["ci_high"] == pytest.approx(centre + half)

    failures = report["failures_to_acquire"]
    expected_reasons: dict[str, int] = {}
    for g, _, failure in direct.values():
        if g == "bona_fide" and failure is not None:
            expected_reasons[failure] = expected_reasons.get(failure, 0) + 1
    assert failures["bona_fide"]["by_reason"] == expected_reasons
    assert failures["bona_fide"]["failures"] == 2 and "no_face" in expected_reasons
    assert failures["bona_fide"]["rate"] == pytest.approx(2 / 9)
    assert failures["print"]["failures"] == 0

    for name in ("det_curve.png", "score_histograms.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert "APCER print" in result.output and "Failures to acquire" in result.output


def test_manifest_gives_the_same_numbers_as_the_folder(pad_set: Path, tmp_path: Path) -> None:
    rows = ["path,label,species,subject"]
    for path in sorted(p for p in pad_set.rglob("*") if p.is_file()):
        rel = path.relative_to(pad_set)
        if rel.parts[0] == "live":
            rows.append(f"{path},live,,")
        else:
            rows.append(f"{path},spoof,{rel.parts[1]},")
    manifest = tmp_path / "set.csv"
    manifest.write_text("\n".join(rows) + "\n")
    reports: list[dict[str, Any]] = []
    for args in ((str(pad_set),), ("--manifest", str(manifest))):
        out = tmp_path / f"out{len(reports)}"
        result = _run(*args, "--out", str(out), "--threshold", "0.3", "--bootstrap", "50")
        assert result.exit_code == 0, result.output
        reports.append(json.loads((out / "report.json").read_text()))
    assert reports[0]["metrics"] == reports[1]["metrics"]
    assert reports[0]["failures_to_acquire"] == reports[1]["failures_to_acquire"]


def test_target_bpcer_chooses_the_threshold_and_refuses_to_store_it_unsupported(
    pad_set: Path, direct: dict[str, tuple[str, float | None, str | None]], tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    result = _run(
        str(pad_set), "--out", str(out), "--target-bpcer", "0.2", "--bootstrap", "0",
        "--save", "--channel", "web",
    )  # fmt: skip
    # 7 bona fide: a BPCER of 0.2 needs 15 (rule of 3), so nothing is stored (no database
    # is reached) and the report still says which threshold it would have been.
    assert result.exit_code == 2
    assert "not saved" in result.output and "--allow-unsupported" in result.output
    report = json.loads((out / "report.json").read_text())
    bona = sorted((s for g, s, _ in direct.values() if g == "bona_fide" and s is not None),
                  reverse=True)  # fmt: skip
    expected = bona[math.floor(0.2 * len(bona))]  # one of 7 may lie above it
    chosen = report["operating_threshold"]
    assert chosen["chosen_by"] == "target_bpcer" and chosen["supported"] is False
    assert chosen["threshold"] == pytest.approx(expected)
    assert report["metrics"]["bpcer"]["value"] == pytest.approx(1 / 7)
    assert "calibration" not in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "either DIR or --manifest"),
        (("--save",), "--channel"),
        (("--save", "--channel", "Web!"), "--channel"),
        (("--activate", "--channel", "web"), "--threshold, --target-apcer or --target-bpcer"),
        (("--threshold", "0.5", "--target-apcer", "0.1"), "at most one"),
    ],
)
def test_usage_errors_exit_2(pad_set: Path, args: tuple[str, ...], message: str) -> None:
    folder = () if args == () else (str(pad_set),)
    result = _run(*folder, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_folder_without_images_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "live").mkdir()
    result = _run(str(tmp_path))
    assert result.exit_code == 2 and "no images found" in result.output
