"""Per-channel liveness thresholds on the real stack: a channel's activated calibration
decides the jobs that name that channel, and the audit records which calibration it was."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from deploy.demo import create_dev_api_key
from shared.db.liveness_calibrations import (
    active_liveness_threshold,
    list_liveness_calibrations,
    save_liveness_calibration,
)
from shared.paths import minifasnet_dir, sample_face_pack_dir
from shared.schemas import JobView
from workers.cli.liveness import app as liveness_cli

from .conftest import LiveStack

pytestmark = pytest.mark.integration


def _wait(live: LiveStack, job_id: UUID) -> JobView:
    return live.client.wait(job_id, timeout=120)


def _audit(live: LiveStack, job_id: UUID) -> dict[str, object]:
    rows = live.sql("SELECT details FROM audit_log WHERE job_id = %s", job_id)
    assert len(rows) == 1, rows
    details = rows[0][0]
    assert isinstance(details, dict)
    return details


def _channel(name: str) -> str:
    return f"{name}-{uuid4().hex[:8]}"


def test_activated_channel_threshold_decides_verifications_of_that_channel(
    live: LiveStack, cli: CliRunner, faces: Path, tmp_path: Path
) -> None:
    enrolled, probe = sorted((faces / "identities" / "kit_harington").iterdir())
    user = f"chan-{uuid4().hex[:8]}"
    assert _wait(live, live.client.submit_enrollment(user, [enrolled.read_bytes()])).status == (
        "succeeded"
    )

    # No channel: the configured threshold decides, and the probe is accepted.
    default = _wait(live, live.client.submit_verification(user, probe.read_bytes()))
    assert default.result is not None and default.result["decision"] == "accept"
    liveness = default.result["liveness"]
    assert liveness["threshold_source"] == "settings" and liveness["calibration_id"] is None
    assert liveness["threshold"] == live.settings.liveness_threshold
    score = default.result["probe"]["liveness"]["spoof_score"]
    assert 0.1 < score < live.settings.liveness_threshold  # this photo scores about 0.5

    # A stricter kiosk: evaluate a labelled folder and activate a threshold below the probe's
    # spoof score for the channel, through the CLI.
    kiosk = _channel("kiosk")
    strict = round(score * 0.8, 4)
    folder = tmp_path / "set"
    (folder / "live").mkdir(parents=True)
    (folder / "spoof" / "replay").mkdir(parents=True)
    (folder / "live" / probe.name).write_bytes(probe.read_bytes())
    (folder / "spoof" / "replay" / "f2.jpg").write_bytes(
        (faces / "pad" / "replay" / "image_F2.jpg").read_bytes()
    )
    result = cli.invoke(
        liveness_cli,
        [
            "evaluate", str(folder), "--out", str(tmp_path / "eval"), "--threshold", str(strict),
            "--activate", "--channel", kiosk, "--model-dir", str(minifasnet_dir()),
            "--face-pack", str(sample_face_pack_dir()), "--bootstrap", "0", "--no-progress",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    calibration_id = report["calibration"]["calibration_id"]
    assert report["calibration"] == {
        "calibration_id": calibration_id,
        "channel": kiosk,
        "threshold": strict,
        "active": True,
    }
    # The evaluation saw the same score the worker did: the channel's threshold refuses it.
    assert report["metrics"]["bpcer"]["value"] == 1.0
    listed = cli.invoke(liveness_cli, ["calibrations", "--channel", kiosk, "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert row["calibration_id"] == calibration_id and row["is_active"] is True
    assert row["model_version"] == liveness["model_version"]

    # The same probe on the kiosk channel is refused by the kiosk's threshold...
    job = _wait(live, live.client.submit_verification(user, probe.read_bytes(), channel=kiosk))
    assert job.result is not None and job.result["decision"] == "liveness_failed"
    assert "spoof_suspected" in {r["code"] for r in job.result["reasons"]}
    for key, value in {
        "channel": kiosk,
        "threshold": strict,
        "calibration_id": calibration_id,
        "threshold_source": "calibration",
    }.items():
        assert job.result["liveness"][key] == value, key
    assert job.result["probe"]["liveness"]["calibration_id"] == calibration_id
    # ...and the audit names the calibration that decided.
    details = _audit(live, job.job_id)
    assert details["decision"] == "liveness_failed"
    assert details["liveness_calibration_id"] == calibration_id
    assert details["liveness_channel"] == kiosk
    assert details["liveness_threshold"] == strict
    assert details["liveness_threshold_source"] == "calibration"

    # A channel without a calibration falls back to the configured threshold.
    web = _channel("web")
    job = _wait(live, live.client.submit_verification(user, probe.read_bytes(), channel=web))
    assert job.result is not None and job.result["decision"] == "accept"
    assert job.result["liveness"]["channel"] == web
    assert job.result["liveness"]["threshold_source"] == "settings"
    details = _audit(live, job.job_id)
    assert details["liveness_calibration_id"] is None and details["liveness_channel"] == web

    # Over HTTP the channel is a form field like any other.
    token = create_dev_api_key(live.settings, f"chan-{uuid4().hex[:6]}")
    response = httpx.post(
        f"{live.gateway_url}/v1/verifications",
        params={"wait": 60},
        headers={"Authorization": f"Bearer {token}"},
        data={"user_id": user, "channel": kiosk},
        files={"image": (probe.name, probe.read_bytes(), "image/jpeg")},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"]["decision"] == "liveness_failed"
    bad = httpx.post(
        f"{live.gateway_url}/v1/verifications",
        headers={"Authorization": f"Bearer {token}"},
        data={"user_id": user, "channel": "Kiosk 1"},
        files={"image": (probe.name, probe.read_bytes(), "image/jpeg")},
        timeout=60,
    )
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_payload", bad.text


def test_channel_threshold_decides_enrollment_and_its_audit(live: LiveStack, faces: Path) -> None:
    photo = faces / "identities" / "kit_harington" / "john2.jpeg"  # spoof score about 0.5
    first = _wait(
        live, live.client.submit_enrollment(f"chen-{uuid4().hex[:8]}", [photo.read_bytes()])
    )
    assert first.status == "succeeded" and first.result is not None
    model_version = first.result["liveness"]["model_version"]
    model_name = first.result["liveness"]["model_name"]
    assert first.result["liveness"]["threshold_source"] == "settings"

    mobile = _channel("mobile")
    with psycopg.connect(live.settings.database_dsn()) as conn:  # the app role, as the CLI
        lenient = save_liveness_calibration(
            conn, channel=mobile, model_name=model_name, model_version=model_version,
            threshold=0.9, report={"note": "test"}, activate=True,
        )  # fmt: skip
        strict = save_liveness_calibration(
            conn, channel=mobile, model_name=model_name, model_version=model_version,
            threshold=0.2, report={"note": "test"}, activate=False,
        )  # fmt: skip

    # The active (lenient) calibration decides: enrolled, and the audit says by which.
    user = f"chen-{uuid4().hex[:8]}"
    job = _wait(live, live.client.submit_enrollment(user, [photo.read_bytes()], channel=mobile))
    assert job.status == "succeeded", job.error
    details = _audit(live, job.job_id)
    assert isinstance(details["liveness"], dict)
    assert details["liveness"]["calibration_id"] == str(lenient)
    assert details["liveness"]["channel"] == mobile
    assert details["liveness"]["threshold"] == 0.9

    # Activating the strict one (the CLI's `liveness activate`) switches the decision.
    result = CliRunner().invoke(liveness_cli, ["activate", str(strict)], env=live.endpoints.env())
    assert result.exit_code == 0, result.output
    with psycopg.connect(live.settings.database_dsn()) as conn:
        rows = list_liveness_calibrations(conn, channel=mobile)
        assert {(r.calibration_id, r.is_active) for r in rows} == {(lenient, False), (strict, True)}
        assert (
            active_liveness_threshold(
                conn, channel=mobile, model_version="some-other-model", default=0.6
            ).source
            == "settings"
        )
    job = _wait(
        live,
        live.client.submit_enrollment(
            f"chen-{uuid4().hex[:8]}", [photo.read_bytes()], channel=mobile
        ),
    )
    assert job.status == "failed" and job.error is not None
    assert job.error["code"] == "liveness_rejected"
    assert job.result is not None
    (image,) = job.result["details"]["images"]
    assert image["liveness"]["calibration_id"] == str(strict)
    assert image["liveness"]["threshold"] == 0.2
