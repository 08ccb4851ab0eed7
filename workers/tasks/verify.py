"""``faceauth.verify`` (1:1) and ``faceauth.identify`` (1:N)."""

from __future__ import annotations

from typing import Any

from celery import Task

from shared.schemas import JobKind, TaskName
from workers.celery_app import app
from workers.job_runner import run_job
from workers.pipeline.identification import identify as identify_pipeline
from workers.pipeline.verification import verify as verify_pipeline


@app.task(bind=True, name=str(TaskName.VERIFY))
def verify(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return run_job(self, JobKind.VERIFY, args, kwargs, verify_pipeline)


@app.task(bind=True, name=str(TaskName.IDENTIFY))
def identify(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return run_job(self, JobKind.IDENTIFY, args, kwargs, identify_pipeline)
