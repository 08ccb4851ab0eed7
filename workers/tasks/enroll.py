"""``faceauth.enroll``: quality-gate, embed and store 1–3 photos of one user."""

from __future__ import annotations

from typing import Any

from celery import Task

from shared.schemas import JobKind, TaskName
from workers.celery_app import app
from workers.job_runner import run_job
from workers.pipeline.enrollment import enroll as enroll_pipeline


@app.task(bind=True, name=str(TaskName.ENROLL))
def enroll(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return run_job(self, JobKind.ENROLL, args, kwargs, enroll_pipeline)
