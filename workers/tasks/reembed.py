"""``faceauth.reembed``: one user's templates in the worker's current model version."""

from __future__ import annotations

from typing import Any

from celery import Task

from shared.schemas import JobKind, TaskName
from workers.celery_app import app
from workers.job_runner import run_job
from workers.pipeline.reembed import reembed as reembed_pipeline


@app.task(bind=True, name=str(TaskName.REEMBED))
def reembed(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return run_job(self, JobKind.REEMBED, args, kwargs, reembed_pipeline)
