"""Job payload validation: what producers may send."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.celery_config import celery_config
from shared.config import Settings
from shared.schemas import (
    INTERNAL_TASKS,
    JOBS,
    EnrollRequest,
    InspectImageRequest,
    JobKind,
    QueueRole,
)


@pytest.mark.parametrize("key", ["../x.jpg", "a/../b.jpg", "a//b.jpg", "/abs.jpg", "", "x" * 600])
def test_bad_image_keys_are_refused(key: str) -> None:
    with pytest.raises(ValidationError):
        InspectImageRequest(image_key=key)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        EnrollRequest.model_validate({"user_id": "u1", "image_keys": ["a.jpg"], "extra": 1})


@pytest.mark.parametrize("user_id", ["", "has space", "x" * 200, "-leading-dash"])
def test_bad_user_ids_are_refused(user_id: str) -> None:
    with pytest.raises(ValidationError):
        EnrollRequest(user_id=user_id, image_keys=["a.jpg"])


def test_every_kind_is_declared_once_and_routed() -> None:
    assert set(JOBS) == set(JobKind)
    conf = celery_config(Settings())
    jobs = {spec.task_name for spec in JOBS.values()}
    assert set(conf["task_routes"]) == jobs | set(INTERNAL_TASKS)
    assert len({spec.task_name for spec in JOBS.values()}) == len(JobKind)
    assert all(spec.task_name == f"faceauth.{kind}" for kind, spec in JOBS.items())


def test_workers_register_one_task_per_kind() -> None:
    from workers.tasks import TASKS, JobTask

    assert set(TASKS) == set(JobKind)
    for kind, task in TASKS.items():
        assert isinstance(task, JobTask) and task.name == JOBS[kind].task_name


def test_celery_config_is_json_only_and_crash_safe() -> None:
    conf = celery_config(Settings())
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["result_accept_content"] == ["json"]
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    s = Settings()
    for spec in JOBS.values():
        queue = s.queue_inference if spec.queue is QueueRole.INFERENCE else s.queue_io
        assert conf["task_routes"][spec.task_name]["queue"] == queue
    assert conf["task_routes"]["faceauth.enroll"]["queue"] == s.queue_inference
    assert conf["task_routes"]["faceauth.delete_user"]["queue"] == s.queue_io
    # Pool and concurrency stay Celery's (or the command line's) unless configured.
    assert "worker_pool" not in conf and "worker_concurrency" not in conf
    batching = celery_config(Settings(worker_jobs_in_flight=8))
    assert batching["worker_pool"] == "threads" and batching["worker_concurrency"] == 8
    assert celery_config(Settings(worker_jobs_in_flight=1))["worker_pool"] == "prefork"
