"""Prometheus metrics of a worker: jobs by kind and outcome, stage latencies, model loads.

With prefork, each pool child is its own process; ``prometheus_client``'s
multiprocess mode (PROMETHEUS_MULTIPROC_DIR) aggregates them when set, and
``start_metrics_server`` exposes the registry on FACEAUTH_METRICS_PORT.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

from shared.schemas import JobKind, JobStatus

JOBS = Counter(
    "faceauth_jobs_total",
    "Jobs finished, by kind, status and error code",
    ["kind", "status", "error_code"],
)
JOB_SECONDS = Histogram(
    "faceauth_job_seconds",
    "Job wall time in the worker",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
STAGE_SECONDS = Histogram(
    "faceauth_stage_seconds",
    "Time per pipeline stage",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
MODEL_LOAD_SECONDS = Histogram(
    "faceauth_model_load_seconds",
    "Model load time per process",
    ["model"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60),
)


def observe_job(
    kind: JobKind, status: JobStatus, error: dict[str, Any] | None, seconds: float
) -> None:
    code = str(error.get("code")) if error else ""
    JOBS.labels(kind=str(kind), status=str(status), error_code=code).inc()
    JOB_SECONDS.labels(kind=str(kind)).observe(seconds)


def observe_stage(stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(stage=stage).observe(seconds)


def observe_model_load(model: str, seconds: float) -> None:
    MODEL_LOAD_SECONDS.labels(model=model).observe(seconds)
