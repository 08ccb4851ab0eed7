"""``faceauth.apply_retention``: expire old source images of opted-out users (IO queue)."""

from __future__ import annotations

from typing import Any

from celery import Task

from shared.schemas import JobKind, TaskName
from workers.celery_app import app
from workers.job_runner import run_job
from workers.pipeline.retention import apply_retention


@app.task(bind=True, name=str(TaskName.APPLY_RETENTION))
def retention(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return run_job(self, JobKind.APPLY_RETENTION, args, kwargs, apply_retention)
