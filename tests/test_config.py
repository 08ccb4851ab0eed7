"""Settings: env prefix, secrets hidden, every field documented in the README."""

from __future__ import annotations

import re

import pytest

from shared.config import Settings
from shared.paths import REPO_ROOT


def test_env_prefix_and_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEAUTH_MIN_BLUR_VARIANCE", "12.5")
    monkeypatch.setenv("FACEAUTH_S3_SECRET_KEY", "s3cr3t")
    monkeypatch.setenv("FACEAUTH_ORT_PROVIDERS", '["CPUExecutionProvider"]')
    s = Settings()
    assert s.min_blur_variance == 12.5
    assert s.ort_providers == ["CPUExecutionProvider"]
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s.model_dump())
    assert s.s3_secret_key.get_secret_value() == "s3cr3t"


def test_defaults_match_the_enrollment_prototype() -> None:
    s = Settings()
    assert (s.min_det_score, s.min_face_width_px, s.min_blur_variance) == (0.5, 90, 8.0)
    assert (s.min_brightness, s.max_brightness, s.min_face_area_ratio) == (25.0, 235.0, 0.02)
    assert (s.max_abs_yaw_deg, s.max_abs_pitch_deg) == (30.0, 20.0)
    assert (s.enroll_min_images, s.enroll_max_images) == (1, 3)


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    documented = set(re.findall(r"`(FACEAUTH_[A-Z0-9_]+)`", readme))
    fields = {f"FACEAUTH_{name.upper()}" for name in Settings.model_fields}
    assert fields <= documented, sorted(fields - documented)


def test_readme_config_table_is_generated_from_settings() -> None:
    from deploy.config_docs import config_table

    assert config_table() in (REPO_ROOT / "README.md").read_text()


def test_readme_task_table_is_generated_from_the_job_registry() -> None:
    from deploy.config_docs import task_table

    assert task_table() in (REPO_ROOT / "README.md").read_text()
