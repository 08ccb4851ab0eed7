"""``faceauth.delete_user``: erase a user's templates, images and pending jobs (IO queue)."""

from __future__ import annotations

from typing import Any

from celery import Task

from shared.schemas import JobKind, TaskName
from workers.celery_app import app
from workers.job_runner import run_job
from workers.pipeline.deletion import delete_user as delete_user_pipeline


@app.task(bind=True, name=str(TaskName.DELETE_USER))
def delete_user(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return run_job(self, JobKind.DELETE_USER, args, kwargs, delete_user_pipeline)
