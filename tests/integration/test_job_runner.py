"""Every path of the job runner, run in-process against the real database.

The handlers here are stand-ins (pure logic): what is under test is the runner's
bookkeeping around them — the job row, its outcome, retries and leases.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import pytest

from shared.db import jobs as job_repo
from shared.errors import ErrorCode, FaceauthError, TransientError
from shared.schemas import JobKind
from workers import job_runner, runtime
from workers.job_runner import JobContext, Outcome, run_job

from .conftest import LiveStack

pytestmark = pytest.mark.integration


class RetryRequested(Exception):
    def __init__(self, countdown: float) -> None:
        super().__init__(countdown)
        self.countdown = countdown


@dataclass
class FakeRequest:
    id: str = field(default_factory=lambda: str(uuid4()))
    retries: int = 0


@dataclass
class FakeTask:
    """Celery's bound-task surface the runner uses: ``request`` and ``retry``."""

    request: FakeRequest = field(default_factory=FakeRequest)

    def retry(self, *, exc: Exception, countdown: float, max_retries: int) -> Exception:
        return RetryRequested(countdown)


@pytest.fixture
def worker(live_env: LiveStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveStack]:
    """This process acts as a worker of the live stack (its own runtime, fresh settings)."""
    monkeypatch.setattr(runtime, "_runtime", None)
    yield live_env
    monkeypatch.setattr(runtime, "_runtime", None)


def _payload() -> dict[str, Any]:
    return {"image_key": f"probes/{uuid4().hex}.jpg"}


def _row(live: LiveStack, job_id: str | UUID) -> tuple[Any, ...]:
    (row,) = live.sql(
        "SELECT status, error_code, payload ? 'image_key', lease_owner IS NULL"
        " FROM jobs WHERE job_id = %s",
        str(job_id),
    )
    return row


def _ok(request: Any, ctx: JobContext) -> Outcome:
    return Outcome(result={"seen": request.image_key})


def test_a_job_succeeds_once_and_a_redelivery_returns_the_stored_outcome(
    worker: LiveStack,
) -> None:
    task = FakeTask()
    calls: list[UUID] = []

    def handler(request: Any, ctx: JobContext) -> Outcome:
        calls.append(ctx.job_id)
        return _ok(request, ctx)

    payload = _payload()
    first = run_job(task, JobKind.INSPECT_IMAGE, (), {"payload": payload}, handler)  # type: ignore[arg-type]
    again = run_job(task, JobKind.INSPECT_IMAGE, (), {"payload": payload}, handler)  # type: ignore[arg-type]
    assert first == again and first["status"] == "succeeded"
    assert len(calls) == 1
    assert _row(worker, task.request.id) == ("succeeded", None, True, True)


def test_an_invalid_payload_fails_under_the_task_id_without_running(worker: LiveStack) -> None:
    task = FakeTask()
    out = run_job(task, JobKind.INSPECT_IMAGE, (), {"payload": {"image_key": "../x"}}, _ok)  # type: ignore[arg-type]
    assert out["status"] == "failed" and out["error"]["code"] == "invalid_payload"
    assert _row(worker, task.request.id) == (
        "failed",
        "invalid_payload",
        False,
        True,
    )


def test_a_transient_fault_releases_the_lease_and_asks_for_a_retry(worker: LiveStack) -> None:
    task = FakeTask()

    def flaky(request: Any, ctx: JobContext) -> Outcome:
        raise TransientError(ErrorCode.STORAGE_UNAVAILABLE, "S3 is down")

    with pytest.raises(RetryRequested) as retry:
        run_job(task, JobKind.INSPECT_IMAGE, (), {"payload": _payload()}, flaky)  # type: ignore[arg-type]
    assert 1 <= retry.value.countdown <= 2  # first retry: 1 s floor + full jitter up to 1 s
    # Back to queued so that the retry's delivery may claim it at once.
    assert _row(worker, task.request.id) == ("queued", None, True, True)


def test_when_retries_run_out_the_job_fails_with_retries_exhausted(worker: LiveStack) -> None:
    task = FakeTask(FakeRequest(retries=worker.settings.task_max_retries))

    def down(request: Any, ctx: JobContext) -> Outcome:
        raise TransientError(ErrorCode.DATABASE_UNAVAILABLE, "database down")

    out = run_job(task, JobKind.INSPECT_IMAGE, (), {"payload": _payload()}, down)  # type: ignore[arg-type]
    assert out["error"]["code"] == "retries_exhausted"
    assert _row(worker, task.request.id) == (
        "failed",
        "retries_exhausted",
        True,
        True,
    )


def test_a_crashing_handler_fails_the_job_with_internal_error(worker: LiveStack) -> None:
    task = FakeTask()

    def buggy(request: Any, ctx: JobContext) -> Outcome:
        raise ZeroDivisionError

    out = run_job(task, JobKind.INSPECT_IMAGE, (), {"payload": _payload()}, buggy)  # type: ignore[arg-type]
    assert out["error"] == {
        "code": "internal_error",
        "message": "internal error (ZeroDivisionError)",
    }
    assert _row(worker, task.request.id) == (
        "failed",
        "internal_error",
        True,
        True,
    )


def test_a_coded_error_of_the_handler_is_the_jobs_outcome(worker: LiveStack) -> None:
    task = FakeTask()

    def refuses(request: Any, ctx: JobContext) -> Outcome:
        raise FaceauthError(ErrorCode.IMAGE_UNDECODABLE, "not an image")

    out = run_job(task, JobKind.INSPECT_IMAGE, (), {"payload": _payload()}, refuses)  # type: ignore[arg-type]
    assert (out["status"], out["error"]["code"]) == ("failed", "image_undecodable")


def test_a_failure_before_the_job_row_existed_is_recorded_with_its_kind(
    worker: LiveStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database was down when the job started and stayed down through every retry."""
    task = FakeTask(FakeRequest(retries=worker.settings.task_max_retries))
    real_create = job_repo.create_job
    calls = {"n": 0}

    def create_once_down(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TransientError(ErrorCode.DATABASE_UNAVAILABLE, "database down")
        return real_create(*args, **kwargs)

    monkeypatch.setattr(job_runner.job_repo, "create_job", create_once_down)
    out = run_job(task, JobKind.INSPECT_IMAGE, (), {"payload": _payload()}, _ok)  # type: ignore[arg-type]
    assert out["error"]["code"] == "retries_exhausted"
    assert worker.sql("SELECT kind FROM jobs WHERE job_id = %s", task.request.id) == [
        ("inspect_image",)
    ]
    assert _row(worker, task.request.id) == (
        "failed",
        "retries_exhausted",
        True,
        True,
    )


def test_a_task_id_that_is_not_a_uuid_touches_nothing(worker: LiveStack) -> None:
    task = FakeTask(FakeRequest(id="not-a-uuid"))
    out = run_job(task, JobKind.INSPECT_IMAGE, (), {"payload": _payload()}, _ok)  # type: ignore[arg-type]
    assert out["status"] == "refused" and out["error"]["code"] == "job_conflict"
