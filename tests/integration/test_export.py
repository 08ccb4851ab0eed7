"""A user's templates exported as JSON and Parquet, read back intact."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from .conftest import LiveStack

pytestmark = pytest.mark.integration


def test_export_json_and_parquet(live_env: LiveStack, faces: Path, tmp_path: Path) -> None:
    from shared.cli import app

    live = live_env

    user = f"biden-export-{uuid4().hex[:6]}"
    photos = sorted((faces / "identities" / "biden").iterdir())
    job = live.client.wait(
        live.client.submit_enrollment(user, [p.read_bytes() for p in photos]), 120
    )
    assert job.status == "succeeded"
    runner = CliRunner()
    for name in ("t.json", "t.parquet"):
        result = runner.invoke(app, ["export", user, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    missing = runner.invoke(app, ["export", "nobody-at-all", "--out", str(tmp_path / "x.json")])
    assert missing.exit_code == 1
    records = json.loads((tmp_path / "t.json").read_text())
    table = pq.read_table(tmp_path / "t.parquet").to_pylist()
    assert len(records) == len(table) == len(photos) + 1
    assert oct((tmp_path / "t.json").stat().st_mode & 0o777) == "0o600"
    for rec, row in zip(records, table, strict=True):
        assert rec["template_id"] == row["template_id"]
        assert len(rec["embedding"]) == 128
        assert np.allclose(rec["embedding"], row["embedding"], atol=1e-6)
        assert abs(np.linalg.norm(rec["embedding"]) - 1) < 1e-4
        assert rec["model_version"] == job.result["model_version"]  # type: ignore[index]
        assert json.loads(row["quality"]) == rec["quality"]
    assert sum(r["is_mean_template"] for r in records) == 1
