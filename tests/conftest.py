"""Session fixtures: the real embedded stack (Redis, Postgres+pgvector, S3, Celery worker).

The same launcher as ``faceauth dev up`` starts the servers on loopback ports;
nothing here is mocked. Unit tests that need no server never touch these fixtures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.paths import assets_dir

ASSETS = assets_dir()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def assets() -> Path:
    if not (ASSETS / "models" / "facepack-test").is_dir():
        pytest.fail(f"provided assets not found at {ASSETS} (set FACEAUTH_SHARED_DIR)")
    return ASSETS


@pytest.fixture(scope="session")
def faces(assets: Path) -> Path:
    return assets / "faces"
