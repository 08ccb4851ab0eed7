"""1:1 verification, 1:N identification, duplicates, calibration — real queue."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from typer.testing import CliRunner

from shared.db import templates as template_repo
from shared.schemas import JobView

from .conftest import LiveStack

pytestmark = pytest.mark.integration


class Gallery:
    """Each person enrolled with all but the last photo; the last one is the probe."""

    def __init__(self, live: LiveStack, faces: Path) -> None:
        self.suffix = uuid4().hex[:6]
        self.people = sorted(p.name for p in (faces / "identities").iterdir() if p.is_dir())
        self.photos = {p: sorted((faces / "identities" / p).iterdir()) for p in self.people}
        self.user = {p: f"{p}-gal-{self.suffix}" for p in self.people}
        jobs = {
            p: live.client.submit_enrollment(
                self.user[p], [f.read_bytes() for f in self.photos[p][:-1]]
            )
            for p in self.people
        }
        for p, job_id in jobs.items():
            job = live.client.wait(job_id, timeout=120)
            assert job.status == "succeeded", (p, job.error)

    def probe(self, person: str) -> bytes:
        return self.photos[person][-1].read_bytes()


@pytest.fixture(scope="module")
def gallery(live: LiveStack, faces: Path) -> Gallery:
    return Gallery(live, faces)


def verify(live: LiveStack, user: str, image: bytes | str, **kw: object) -> JobView:
    return live.client.wait(live.client.submit_verification(user, image, **kw), timeout=60)  # type: ignore[arg-type]


def test_genuine_accepts_and_impostors_reject(live: LiveStack, gallery: Gallery) -> None:
    for person in gallery.people:
        key = live.client.upload_image(gallery.probe(person), prefix="tests/probes")
        for claimed in gallery.people:
            job = verify(live, gallery.user[claimed], key)
            assert job.status == "succeeded", job.error
            result = job.result
            assert result is not None
            expected = "accept" if claimed == person else "reject"
            assert result["decision"] == expected, (person, claimed, result["score"])
            assert result["decided_by"] == "mean_template"
            assert result["thresholds"]["source"] in ("settings", "calibration")
            assert result["best_template_score"] is not None


def test_decision_is_audited_without_embedding(live: LiveStack, gallery: Gallery) -> None:
    job = verify(live, gallery.user["obama"], gallery.probe("obama"))
    rows = live.sql("SELECT event, user_id, details FROM audit_log WHERE job_id = %s", job.job_id)
    assert len(rows) == 1
    event, user, details = rows[0]
    assert event == "verification" and user == gallery.user["obama"]
    assert isinstance(details, dict)
    assert details["decision"] == "accept" and details["face_model_version"]
    assert {"t_low", "t_high", "calibration_id"} <= set(details["thresholds"])
    assert details["latency_ms"] > 0
    text = json.dumps(details)
    assert "embedding" not in text and len(text) < 4000


def test_replay_of_enrolled_person_is_refused_for_liveness(live: LiveStack, faces: Path) -> None:
    user = f"padlive-{uuid4().hex[:6]}"
    live_photo = faces / "pad" / "live" / "image_T1.jpg"
    assert (
        live.client.wait(live.client.submit_enrollment(user, [live_photo.read_bytes()]), 120).status
        == "succeeded"
    )
    for attack in ("replay/image_F2.jpg", "print/image_F1.jpg"):
        job = verify(live, user, (faces / "pad" / attack).read_bytes())
        assert job.status == "succeeded"
        assert job.result is not None
        assert job.result["decision"] == "liveness_failed", attack
        assert "score" not in job.result  # refused before any comparison
        assert "spoof_suspected" in {r["code"] for r in job.result["reasons"]}
    # The same replay with liveness switched off matches the person: the refusal above was
    # liveness, not a low score.
    job = verify(
        live, user, (faces / "pad" / "replay" / "image_F2.jpg").read_bytes(), liveness=False
    )
    assert job.result is not None and job.result["liveness"]["checked"] is False
    assert job.result["score"] > 0.4


def test_quality_failure_is_its_own_decision(
    live: LiveStack, gallery: Gallery, faces: Path
) -> None:
    job = verify(
        live, gallery.user["obama"], (faces / "group" / "obama_and_biden.jpg").read_bytes()
    )
    assert job.result is not None and job.result["decision"] == "quality_failed"
    assert "multiple_faces" in {r["code"] for r in job.result["reasons"]}


def test_distinct_errors(live: LiveStack, gallery: Gallery) -> None:
    probe = gallery.probe("biden")
    job = verify(live, f"nobody-{uuid4().hex[:6]}", probe)
    assert job.status == "failed" and job.error is not None and job.error["code"] == "unknown_user"
    # A user whose only templates come from another model version.
    other = f"oldmodel-{uuid4().hex[:6]}"
    with psycopg.connect(live.settings.database_dsn()) as conn:
        register_vector(conn)
        template_repo.ensure_model_version(
            conn, model_name="old", model_version="old-v1", embedding_dim=4
        )
        template_repo.write_enrollment(
            conn,
            enrollment_id=uuid4(),
            user_id=other,
            model_name="old",
            model_version="old-v1",
            templates=[template_repo.NewTemplate(np.ones(4, np.float32) / 2, True, {}, None)],
            liveness_checked=False,
            duplicate_of=[],
        )
        conn.execute("INSERT INTO users (user_id) VALUES (%s)", (f"empty-{other}",))
    job = verify(live, other, probe)
    assert job.error is not None and job.error["code"] == "model_version_mismatch"
    job = verify(live, f"empty-{other}", probe)
    assert job.error is not None and job.error["code"] == "no_templates_for_model"


def test_identification_ranks_the_right_person_first(live: LiveStack, gallery: Gallery) -> None:
    person_of = {u: p for p, u in gallery.user.items()}
    for person in gallery.people:
        job = live.client.wait(
            live.client.submit_identification(gallery.probe(person), top_k=100), 60
        )
        assert job.status == "succeeded", job.error
        result = job.result
        assert result is not None and result["search"] in ("hnsw", "exact")
        gallery_hits = [c for c in result["candidates"] if c["user_id"] in person_of]
        assert person_of[gallery_hits[0]["user_id"]] == person, result["candidates"]
        assert gallery_hits[0]["decision"] == "accept"
        scores = [c["score"] for c in result["candidates"]]
        assert scores == sorted(scores, reverse=True)


def test_same_face_under_second_user_is_flagged(live: LiveStack, gallery: Gallery) -> None:
    second = f"kit-again-{uuid4().hex[:6]}"
    job = live.client.wait(
        live.client.submit_enrollment(second, [gallery.probe("kit_harington")]), 120
    )
    assert job.status == "succeeded"  # duplicate_action=flag: stored, with the flag
    assert job.result is not None
    matches = job.result["duplicate_of"]
    flagged = {d["user_id"] for d in matches}
    stored = live.sql("SELECT duplicate_of FROM enrollments WHERE enrollment_id = %s", job.job_id)
    assert {d["user_id"] for d in stored[0][0]} == flagged  # type: ignore[union-attr]
    # The first account is flagged, unless the list is full of closer matches (other tests
    # of the session enroll the same photos under many ids; the list is capped).
    ((similarity,),) = live.sql(
        "SELECT 1 - (a.embedding <=> b.embedding) FROM templates a, templates b"
        " WHERE a.user_id = %s AND b.user_id = %s AND a.is_mean_template AND b.is_mean_template"
        " AND a.is_active AND b.is_active",
        second,
        gallery.user["kit_harington"],
    )
    assert similarity >= live.settings.duplicate_threshold  # type: ignore[operator]
    cap = live.settings.duplicate_max_matches
    assert gallery.user["kit_harington"] in flagged or (
        len(matches) == cap and min(d["similarity"] for d in matches) >= similarity - 1e-3  # type: ignore[operator]
    )


def test_calibration_cli_matches_direct_computation(
    live: LiveStack, faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.cli import app
    from shared.config import get_settings
    from shared.paths import sample_face_pack_dir
    from workers.inference.face_pack import FacePack

    for key, value in {
        **live.endpoints.env(),
        "FACEAUTH_FACE_PACK_DIR": str(sample_face_pack_dir()),
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    report_path, plots = tmp_path / "report.json", tmp_path / "plots"
    result = CliRunner().invoke(
        app,
        [
            "calibrate",
            str(faces / "identities"),
            "--report",
            str(report_path),
            "--plots",
            str(plots),
            "--activate",
        ],
    )
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())

    pack = FacePack.load(sample_face_pack_dir())
    import cv2

    emb: dict[str, list[np.ndarray]] = {}
    for person_dir in sorted((faces / "identities").iterdir()):
        for photo in sorted(person_dir.iterdir()):
            img = cv2.imread(str(photo))
            face = pack.detect(img)[0]
            emb.setdefault(person_dir.name, []).append(pack.embed([(img, face.kps)])[0])
    genuine = [float(a @ b) for v in emb.values() for i, a in enumerate(v) for b in v[i + 1 :]]
    people = list(emb)
    impostor = [
        float(a @ b)
        for i, p in enumerate(people)
        for q in people[i + 1 :]
        for a in emb[p]
        for b in emb[q]
    ]
    assert sorted(report["genuine_scores"]) == pytest.approx(sorted(genuine), abs=1e-4)
    assert sorted(report["impostor_scores"]) == pytest.approx(sorted(impostor), abs=1e-4)
    assert report["t_low"] == pytest.approx(np.percentile(impostor, 99), abs=1e-4)
    assert report["t_high"] == pytest.approx(np.percentile(genuine, 10), abs=1e-4)
    assert report["model_version"] == pack.model_version
    assert (plots / "score_histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (plots / "det_curve.png").stat().st_size > 1000
    # The activated calibration is what verification now uses, and it says so.
    active = live.sql(
        "SELECT calibration_id::text, t_low, t_high FROM calibrations"
        " WHERE model_version = %s AND is_active",
        pack.model_version,
    )
    assert len(active) == 1
    job = verify(live, f"padlive-none-{uuid4().hex[:4]}", b"")  # warm-up not needed; unknown user
    assert job.status == "failed"


def test_calibration_job_over_the_enrolled_database(live: LiveStack, gallery: Gallery) -> None:
    job = live.client.wait(live.client.submit_calibration(), timeout=120)
    assert job.status == "succeeded", job.error
    result = job.result
    assert result is not None and result["active"] is False
    counts = result["counts"]
    assert counts["genuine_pairs"] >= 1 and counts["impostor_pairs"] >= 1
    # (Other tests enroll the same photo under several ids, so impostor scores reach 1.0.)
    assert -1.0 - 1e-6 <= result["t_low"] <= result["t_high"] <= 1.0 + 1e-6
    stored = live.sql(
        "SELECT model_version, t_low, is_active, report ? 'genuine_scores', report ? 'eer'"
        " FROM calibrations WHERE calibration_id = %s",
        result["calibration_id"],
    )
    assert stored == [(result["model_version"], result["t_low"], False, False, True)]
