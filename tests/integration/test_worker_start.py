"""A worker checks its models when it starts and says so to its healthcheck."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from deploy.devstack import StartupError

from .conftest import LiveStack

pytestmark = pytest.mark.integration

SPARE_QUEUE = "faceauth.start-check"  # nothing is routed here: these workers take no job


def test_a_worker_with_a_wrong_face_pack_stops_with_one_clear_line(
    live: LiveStack, tmp_path: Path
) -> None:
    env = {**live.worker_env(), "FACEAUTH_FACE_PACK_DIR": str(tmp_path / "no-such-pack")}
    with pytest.raises(StartupError) as caught:
        live.stack.start_worker(queues=[SPARE_QUEUE], extra_env=env, name="badpack")
    assert caught.value.exited
    lines = [
        line
        for line in (live.stack.logs_dir / "badpack.log").read_text().splitlines()
        if "models could not be loaded" in line
    ]
    assert len(lines) == 1 and "no-such-pack" in lines[0], lines


def test_the_ready_file_names_the_loaded_models_and_goes_with_the_worker(
    live: LiveStack, tmp_path: Path
) -> None:
    ready = tmp_path / "ready.json"
    env = {**live.worker_env(), "FACEAUTH_WORKER_READY_FILE": str(ready)}
    worker = live.stack.start_worker(queues=[SPARE_QUEUE], extra_env=env, name="readyfile")
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        models = json.loads(ready.read_text())["models"]
        assert set(models) == {"face_pack", "liveness", "face_mesh"}
        assert models["face_mesh"] == "mediapipe"  # the quality gate's pose and eyes model
        assert models["face_pack"].startswith("facepack-test")
    finally:
        worker.stop()
    assert not ready.exists()


def test_an_io_worker_can_start_without_models(live: LiveStack, tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    env = {
        **live.worker_env(),
        "FACEAUTH_FACE_PACK_DIR": str(tmp_path / "no-such-pack"),
        "FACEAUTH_WORKER_LOAD_MODELS_AT_START": "false",
        "FACEAUTH_WORKER_READY_FILE": str(ready),
    }
    worker = live.stack.start_worker(queues=[SPARE_QUEUE], extra_env=env, name="iostart")
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert json.loads(ready.read_text())["models"] == {}
    finally:
        worker.stop()
