"""Job payload validation: what producers may send."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.celery_config import INFERENCE_TASKS, IO_TASKS, celery_config
from shared.config import Settings
from shared.schemas import REQUEST_FOR_KIND, EnrollRequest, InspectImageRequest, JobKind, TaskName


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


def test_every_kind_has_a_request_model_and_a_routed_task() -> None:
    assert set(REQUEST_FOR_KIND) == set(JobKind)
    routed = set(INFERENCE_TASKS) | set(IO_TASKS)
    assert routed == set(TaskName)


def test_celery_config_is_json_only_and_crash_safe() -> None:
    conf = celery_config(Settings())
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["result_accept_content"] == ["json"]
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    s = Settings()
    assert conf["task_routes"][str(TaskName.ENROLL)]["queue"] == s.queue_inference
    assert conf["task_routes"][str(TaskName.DELETE_USER)]["queue"] == s.queue_io
