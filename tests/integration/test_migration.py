"""Migrating to a second model version (the same pack under another version name)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest

from shared.db import templates as template_repo
from shared.paths import sample_face_pack_dir

from .conftest import LiveStack

pytestmark = pytest.mark.integration

NEW_VERSION = "facepack-test:v2-drill"


def switch_worker(live: LiveStack, env: Callable[[], dict[str, str]]) -> None:
    live.worker_env = env  # type: ignore[method-assign]
    live.restart_worker()


def test_migration_to_a_second_model_version(
    live: LiveStack, faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    obama = sorted((faces / "identities" / "obama").iterdir())
    user = f"obama-mig-{uuid4().hex[:6]}"
    enrolled = live.client.wait(
        live.client.submit_enrollment(user, [p.read_bytes() for p in obama[:2]]), 120
    )
    assert enrolled.status == "succeeded" and enrolled.result is not None
    old_version = enrolled.result["model_version"]
    with psycopg.connect(live.settings.database_dsn()) as conn:
        old_active = template_repo.active_model_version(conn)
    probe = obama[2].read_bytes()

    original_env = live.worker_env
    switch_worker(
        live,
        lambda: {
            **original_env(),
            "FACEAUTH_FACE_PACK_VERSION": NEW_VERSION,
            "FACEAUTH_PREVIOUS_FACE_PACK_DIR": str(sample_face_pack_dir()),
        },
    )
    try:
        # Not yet migrated: verified with the old version the worker still holds.
        before = live.client.wait(live.client.submit_verification(user, probe), 60)
        assert before.status == "succeeded", before.error
        assert before.result is not None and before.result["model_version"] == old_version

        job = live.client.wait(live.client.submit_reembed(user), 120)
        assert job.status == "succeeded", job.error
        assert job.result is not None and job.result["status"] == "reembedded"
        assert job.result["model_version"] == NEW_VERSION
        assert min(job.result["mean_similarity_to_sources"]) > 0.8
        again = live.client.wait(live.client.submit_reembed(user), 120)
        assert again.result is not None and again.result["status"] == "already_current"

        # Migrated: the same user is now verified with the new version.
        after = live.client.wait(live.client.submit_verification(user, probe), 60)
        assert after.result is not None and after.result["model_version"] == NEW_VERSION
        assert after.result["decision"] == before.result["decision"] == "accept"
        versions = live.sql(
            "SELECT DISTINCT model_version FROM templates WHERE user_id = %s AND is_active", user
        )
        assert {v[0] for v in versions} == {old_version, NEW_VERSION}  # side by side

        # The whole population through the CLI's resumable re-embed.
        from shared.cli.model import reembed_all
        from shared.config import get_settings

        for key, value in live.endpoints.env().items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        try:
            outcome = reembed_all(NEW_VERSION, max_in_flight=8, timeout=600)
            second = reembed_all(NEW_VERSION, max_in_flight=8, timeout=600)
        finally:
            get_settings.cache_clear()
        with psycopg.connect(live.settings.database_dsn()) as conn:
            missing = template_repo.users_missing_version(conn, NEW_VERSION)
            total, progress = template_repo.migration_progress(conn)
        # Users whose photos cannot be re-embedded (no stored source image) stay behind;
        # everyone else moved, and a second run has nothing left that it can do.
        assert second["reembedded"] == 0
        assert second["failed"] == outcome["failed"] == len(missing)
        by_version = {p.model_version: p for p in progress}
        assert by_version[NEW_VERSION].users == total - len(missing)

        # Switching the active version is one call (`faceauth model activate`).
        with psycopg.connect(live.settings.database_dsn()) as conn, conn.transaction():
            template_repo.activate_model_version(conn, NEW_VERSION)
        found = live.client.wait(live.client.submit_identification(probe, top_k=100), 60)
        assert found.result is not None and found.result["model_version"] == NEW_VERSION
        # Other tests enroll the same photos under other ids; the migrated user must be
        # found among them, as a match.
        decisions = {c["user_id"]: c["decision"] for c in found.result["candidates"]}
        assert decisions.get(user) == "accept", found.result["candidates"][:5]
    finally:
        if old_active:
            with psycopg.connect(live.settings.database_dsn()) as conn, conn.transaction():
                template_repo.activate_model_version(conn, old_active)
        switch_worker(live, original_env)
