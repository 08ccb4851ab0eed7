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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """On CI every real part is installed, so a skipped test hides a broken install: fail it."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped on CI, where every dependency must be present: {reason}"
