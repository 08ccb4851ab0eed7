"""``faceauth status``, Flower behind basic auth, and the worker's Prometheus endpoint."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from uuid import uuid4

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from deploy.devstack.ports import free_port
from shared.cli import app
from shared.config import Settings
from shared.monitoring import collect_status
from shared.producer import FaceauthClient

from .conftest import LiveStack

pytestmark = pytest.mark.integration


def http_get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + b64encode(":".join(auth).encode()).decode()
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_status_shows_queues_workers_jobs_and_errors(
    live: LiveStack, faces: Path, cli: CliRunner
) -> None:
    ok = live.client.submit_inspection((faces / "identities" / "obama" / "obama.jpg").read_bytes())
    bad = live.client.submit_inspection(f"missing/{uuid4().hex}.jpg")
    assert live.client.wait(ok, timeout=60).status == "succeeded"
    assert live.client.wait(bad, timeout=60).status == "failed"

    result = cli.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    settings = live.settings
    assert set(report["queues"]) == {settings.queue_inference, settings.queue_io}
    assert all(isinstance(n, int) and n >= 0 for n in report["queues"].values())
    assert report["healthy"] is True and report["problems"] == []
    (worker,) = [w for w in report["workers"] if w["name"].startswith("worker@")]
    assert set(worker["queues"]) == {settings.queue_inference, settings.queue_io}
    assert report["jobs_by_status"]["succeeded"] >= 1
    assert report["jobs_by_status"]["failed"] >= 1
    assert report["error_codes"]["image_not_found"] >= 1

    text = cli.invoke(app, ["status"])
    assert text.exit_code == 0, text.output
    for expected in (settings.queue_inference, settings.queue_io, "worker@", "image_not_found"):
        assert expected in text.output


def test_status_reports_unreachable_services_without_hanging() -> None:
    dead = free_port()
    settings = Settings(
        broker_url=f"redis://127.0.0.1:{dead}/0",
        database_url=f"postgresql://nobody@127.0.0.1:{dead}/none",
    )
    started = time.monotonic()
    report = collect_status(settings, timeout=0.5)
    assert time.monotonic() - started < 30
    assert not report.healthy
    assert report.queues is None and report.jobs_by_status is None
    joined = " ".join(report.problems)
    assert "broker unreachable" in joined and "database unreachable" in joined


def test_flower_needs_basic_auth_and_lists_both_queues(live: LiveStack) -> None:
    endpoints = live.stack.endpoints
    if live.stack.flower is not None and live.stack.flower.is_alive():
        url, user, password = endpoints.flower_url, endpoints.flower_user, endpoints.flower_password
    else:
        user, password = "ops", uuid4().hex
        url = live.stack.start_flower(user=user, password=password)
    assert url and user and password
    status, _ = http_get(f"{url}/api/queues/length")
    assert status == 401
    status, _ = http_get(f"{url}/api/queues/length", auth=(user, password + "x"))
    assert status == 401
    status, body = http_get(f"{url}/api/queues/length", auth=(user, password))
    assert status == 200
    names = {q["name"] for q in json.loads(body)["active_queues"]}
    assert {live.settings.queue_inference, live.settings.queue_io} <= names


def test_worker_serves_prometheus_metrics_from_pool_processes(
    live: LiveStack, faces: Path, tmp_path: Path
) -> None:
    port = free_port()
    queue = f"faceauth.metrics-{uuid4().hex[:6]}"  # only this worker consumes it
    env = {
        **live.worker_env(),
        "FACEAUTH_METRICS_PORT": str(port),
        "FACEAUTH_QUEUE_INFERENCE": queue,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
    }
    worker = live.stack.start_worker(queues=[queue], extra_env=env, name="metrics")
    try:
        client = FaceauthClient(live.settings.model_copy(update={"queue_inference": queue}))
        image = (faces / "identities" / "biden" / "biden.jpg").read_bytes()
        for _ in range(2):
            job = client.wait(client.submit_inspection(image), timeout=60)
            assert job.status == "succeeded"
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }
        jobs = (("error_code", ""), ("kind", "inspect_image"), ("status", "succeeded"))
        assert samples[("faceauth_jobs_total", jobs)] == 2.0
        assert samples[("faceauth_model_load_seconds_count", (("model", "face_pack"),))] == 1.0
        assert samples[("faceauth_stage_seconds_count", (("stage", "detect"),))] == 2.0
        assert samples[("faceauth_job_seconds_count", (("kind", "inspect_image"),))] == 2.0
    finally:
        worker.stop()
