"""Right to erasure and source-image retention, through the real stack."""

from __future__ import annotations

import json
import time
from pathlib import Path
from uuid import uuid4

import pytest
from typer.testing import CliRunner

from shared.backfill import BackfillOptions, BackfillRunner
from shared.backfill.manifest import read_manifest
from shared.cli import app
from shared.db import jobs as job_repo
from shared.db.pool import get_pool
from shared.schemas import JOBS, EnrollRequest, JobKind

from .conftest import LiveStack

pytestmark = pytest.mark.integration


def photos(faces: Path, person: str) -> list[Path]:
    return sorted((faces / "identities" / person).iterdir())


def enroll(live: LiveStack, user: str, images: list[bytes | str]) -> dict[str, object]:
    job = live.client.wait(live.client.submit_enrollment(user, images), timeout=120)
    assert job.status == "succeeded", job.error
    assert job.result is not None
    return job.result


def keys_under(live: LiveStack, prefix: str) -> list[str]:
    return live.client.store.list_keys(prefix)


def count(live: LiveStack, query: str, *params: object) -> int:
    return int(live.sql(query, *params)[0][0])  # type: ignore[call-overload]


def queued_enrollment_without_message(live: LiveStack, user: str, key: str) -> EnrollRequest:
    """A queued job of the user whose message has not reached any worker yet."""
    request = EnrollRequest(job_id=uuid4(), user_id=user, image_keys=[key], liveness=False)
    with get_pool(live.settings).connection() as conn:
        job_repo.create_job(
            conn,
            job_id=request.job_id,  # type: ignore[arg-type]
            kind=JobKind.ENROLL,
            idempotency_key=None,
            user_id=user,
            image_refs=[key],
            payload=request.model_dump(mode="json"),
            queued_timeout_s=3600,  # the reconciler leaves it alone during the test
        )
    return request


def test_delete_user_leaves_no_template_or_image_behind(
    live: LiveStack, faces: Path, cli: CliRunner
) -> None:
    user = f"erase-{uuid4().hex[:6]}"
    files = photos(faces, "rose_leslie")
    enroll(live, user, [p.read_bytes() for p in files])
    # A failed enrollment (its upload stays in S3), a verification probe, and a queued job.
    group = (faces / "group" / "kit_with_rose.jpg").read_bytes()
    failed = live.client.wait(live.client.submit_enrollment(user, [group]), timeout=120)
    assert failed.status == "failed"
    probe = live.client.wait(
        live.client.submit_verification(user, files[0].read_bytes(), liveness=False), timeout=120
    )
    assert probe.status == "succeeded"
    (probe_key,) = live.sql("SELECT image_refs->>0 FROM jobs WHERE job_id = %s", probe.job_id)[0]
    pending = queued_enrollment_without_message(live, user, keys_under(live, f"enroll/{user}/")[0])
    assert len(keys_under(live, f"enroll/{user}/")) == len(files) + 1
    assert live.client.store.exists(str(probe_key))

    result = cli.invoke(app, ["user", "delete", user, "--yes", "--json"])
    assert result.exit_code == 0, result.output
    job = json.loads(result.output)
    assert job["status"] == "succeeded"
    report = job["result"]
    assert report["user_existed"] is True
    assert report["templates_deleted"] == len(files) + 1
    assert report["active_templates_deleted"] == len(files) + 1
    assert report["enrollments_deleted"] == 1
    assert report["images_deleted"] == len(files) + 2  # enrollment photos, group photo, probe
    assert report["jobs_cancelled"] == 1

    assert keys_under(live, f"enroll/{user}/") == []
    assert not live.client.store.exists(str(probe_key))
    for table in ("templates", "enrollments", "users"):
        assert count(live, f"SELECT count(*) FROM {table} WHERE user_id = %s", user) == 0
    assert live.sql("SELECT status, error_code FROM jobs WHERE job_id = %s", pending.job_id) == [
        ("failed", "user_deleted")
    ]
    (details,) = live.sql(
        "SELECT details FROM audit_log WHERE user_id = %s AND event = 'user_deleted'", user
    )[0]
    assert isinstance(details, dict)
    assert all(isinstance(v, int | bool) for v in details.values()), details  # counts only
    assert "embedding" not in json.dumps(details) and "enroll/" not in json.dumps(details)

    # The cancelled job's message arriving late must not bring the user back.
    live.client.celery.send_task(
        JOBS[JobKind.ENROLL].task_name,
        kwargs={"payload": pending.model_dump(mode="json", exclude_none=True)},
        task_id=str(pending.job_id),
    )
    time.sleep(2.0)
    assert count(live, "SELECT count(*) FROM templates WHERE user_id = %s", user) == 0
    assert pending.job_id is not None
    late = live.client.get_job(pending.job_id)
    assert late is not None and late.status == "failed"


def test_image_shared_with_another_user_is_kept(live: LiveStack, faces: Path) -> None:
    run = uuid4().hex[:6]
    shared_key = f"legacy/{run}/obama.jpg"
    live.client.store.put(shared_key, photos(faces, "obama")[0].read_bytes(), "image/jpeg")
    alice, bob = f"share-a-{run}", f"share-b-{run}"
    enroll(live, alice, [shared_key])
    enroll(live, bob, [shared_key])
    job = live.client.wait(live.client.submit_user_deletion(alice), timeout=120)
    assert job.status == "succeeded" and job.result is not None
    assert job.result["images_kept_shared"] == 1 and job.result["images_deleted"] == 0
    assert live.client.store.exists(shared_key)
    assert count(live, "SELECT count(*) FROM templates WHERE user_id = %s", bob) == 2
    assert count(live, "SELECT count(*) FROM templates WHERE user_id = %s", alice) == 0


def test_deleting_an_unknown_user_succeeds_and_is_audited(live: LiveStack) -> None:
    user = f"ghost-{uuid4().hex[:6]}"
    job = live.client.wait(live.client.submit_user_deletion(user), timeout=120)
    assert job.status == "succeeded" and job.result is not None
    assert job.result["user_existed"] is False and job.result["templates_deleted"] == 0
    assert (
        count(
            live,
            "SELECT count(*) FROM audit_log WHERE user_id = %s AND event = 'user_deleted'",
            user,
        )
        == 1
    )


def test_backfill_does_not_bring_back_an_erased_user(
    live: LiveStack, faces: Path, tmp_path: Path
) -> None:
    user = f"erased-bf-{uuid4().hex[:6]}"
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"user_id,images\n{user},{photos(faces, 'biden')[0]}\n")

    def backfill(**options: object) -> dict[str, object]:
        opts = BackfillOptions(progress=False, **options)  # type: ignore[arg-type]
        runner = BackfillRunner(live.settings, opts, client=live.client)
        return runner.run(read_manifest(manifest, bucket=live.settings.s3_bucket)).to_dict()

    assert backfill()["enrolled"] == 1
    assert live.client.wait(live.client.submit_user_deletion(user), timeout=120).status == (
        "succeeded"
    )
    again = backfill()
    assert again["rejected"] == {"user_deleted": 1} and again["new_jobs"] == 0
    assert count(live, "SELECT count(*) FROM templates WHERE user_id = %s", user) == 0
    forced = backfill(include_erased=True)
    assert forced["enrolled"] == 1, forced
    assert count(live, "SELECT count(*) FROM enrollments WHERE user_id = %s", user) == 1


def test_retention_removes_old_images_of_opted_out_users_only(
    live: LiveStack, faces: Path, cli: CliRunner
) -> None:
    run = uuid4().hex[:6]
    opted, kept = f"optout-{run}", f"keep-{run}"
    for user in (opted, kept):
        enroll(live, user, [p.read_bytes() for p in photos(faces, "alex_lacamoire")[:2]])
    live.sql("UPDATE users SET reembed_opt_out = true WHERE user_id = %s RETURNING 1", opted)
    # The opted-out user's failed upload is a source image too.
    junk = live.client.wait(
        live.client.submit_enrollment(opted, [(faces / "group" / "t1.jpg").read_bytes()]),
        timeout=120,
    )
    assert junk.status == "failed"
    time.sleep(2.0)
    age = ["--days", "0.00001"]  # about 0.9 s: everything above is older than that

    dry = cli.invoke(app, ["retention", "run", *age, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["images_deleted"] >= 3
    assert len(keys_under(live, f"enroll/{opted}/")) == 3

    real = cli.invoke(app, ["retention", "run", *age, "--page-size", "1", "--json"])
    assert real.exit_code == 0, real.output
    totals = json.loads(real.output)
    assert totals["images_deleted"] >= 3 and totals["jobs"] >= 1
    assert keys_under(live, f"enroll/{opted}/") == []
    assert len(keys_under(live, f"enroll/{kept}/")) == 2
    assert live.sql(
        "SELECT count(*), count(source_image_key) FROM templates WHERE user_id = %s"
        " AND NOT is_mean_template",
        opted,
    ) == [(2, 0)]
    assert (
        count(
            live,
            "SELECT count(*) FROM audit_log WHERE user_id = %s AND event = 'source_images_expired'",
            opted,
        )
        == 1
    )
    # Templates still work for verification after their sources are gone.
    probe = photos(faces, "alex_lacamoire")[2].read_bytes()
    job = live.client.wait(live.client.submit_verification(opted, probe, liveness=False), 120)
    assert job.status == "succeeded"


def test_delete_user_removes_liveness_sessions_their_frames_and_attempt_counter(
    live: LiveStack, faces: Path
) -> None:
    user = f"erase-live-{uuid4().hex[:6]}"
    files = photos(faces, "obama")
    enroll(live, user, [files[0].read_bytes()])
    frames = [p.read_bytes() for p in files[1:]]
    # A session of the user (frames under the user's prefix), and an anonymous session
    # whose frame a verification of the user used (frames under liveness/).
    own = live.client.create_liveness_session(user_id=user)
    anonymous = live.client.create_liveness_session()
    for session in (own, anonymous):
        job = live.client.wait(
            live.client.submit_liveness_check(session.session.session_id, session.nonce, frames),
            timeout=120,
        )
        assert job.result is not None and job.result["decision"] == "live", job.result
    used = live.client.wait(
        live.client.submit_verification(user, liveness_session_id=anonymous.session.session_id),
        timeout=120,
    )
    assert used.result is not None and used.result["decision"] == "accept"
    # One failed decision: the user has an attempt counter.
    reject = live.client.wait(
        live.client.submit_verification(user, photos(faces, "biden")[0].read_bytes()), timeout=120
    )
    assert reject.result is not None and reject.result["decision"] == "reject"
    frame_keys = {
        str(k)
        for (k,) in live.sql(
            "SELECT jsonb_array_elements_text(frame_keys) FROM liveness_sessions"
            " WHERE session_id = ANY(%s)",
            [own.session.session_id, anonymous.session.session_id],
        )
    }
    assert len(frame_keys) == 2 * len(frames)
    assert any(k.startswith("liveness/") for k in frame_keys)
    assert count(live, "SELECT count(*) FROM attempt_counters WHERE user_id = %s", user) == 1

    job = live.client.wait(live.client.submit_user_deletion(user), timeout=120)
    assert job.status == "succeeded" and job.result is not None, job.error
    assert job.result["liveness_sessions_deleted"] == 2
    assert job.result["attempt_counters_deleted"] == 1
    assert count(live, "SELECT count(*) FROM liveness_sessions WHERE user_id = %s", user) == 0
    assert count(live, "SELECT count(*) FROM attempt_counters WHERE user_id = %s", user) == 0
    assert [k for k in frame_keys if live.client.store.exists(k)] == []
