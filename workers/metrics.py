"""Prometheus metrics of a worker: jobs by kind and outcome, stage latencies, model loads.

With prefork, each pool child is its own process; ``prometheus_client``'s
multiprocess mode (PROMETHEUS_MULTIPROC_DIR) aggregates them when set, and
``start_metrics_server`` exposes the registry on FACEAUTH_METRICS_PORT.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
    values,
)

from shared.config import Settings
from shared.schemas import JobKind, JobStatus

log = logging.getLogger(__name__)

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
# Every metric has labels: in multiprocess mode an unlabelled one opens its file at import,
# before start_metrics_server has created PROMETHEUS_MULTIPROC_DIR.
REPUBLISHED = Counter(
    "faceauth_jobs_republished_total",
    "Jobs published again by the reconciler, by kind and the status they were stranded in"
    " (queued: lost message, running: dead worker)",
    ["kind", "stranded"],
)
UNDELIVERABLE = Counter(
    "faceauth_jobs_undeliverable_total",
    "Jobs failed with delivery_attempts_exhausted by the reconciler",
    ["kind"],
)
DEAD_LETTERS = Counter(
    "faceauth_dead_letters_total",
    "Queue messages that were not valid task envelopes, dropped to the dead-letter list",
    ["reason"],
)
REFUSED_MESSAGES = Counter(
    "faceauth_refused_messages_total",
    "Task messages refused without touching a job (job_conflict, foreign job row)",
    ["reason"],
)
WEBHOOK_ATTEMPTS = Counter(
    "faceauth_webhook_attempts_total",
    "Webhook delivery attempts, by outcome (delivered, retry, failed)",
    ["outcome"],
)


BATCH_SIZE = Histogram(
    "faceauth_batch_size",
    "Items per model run (recognizer, liveness), across the jobs in flight",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)


def observe_batch(model: str, size: int) -> None:
    BATCH_SIZE.labels(model=model).observe(size)


def observe_republished(kind: JobKind, stranded: str) -> None:
    REPUBLISHED.labels(kind=str(kind), stranded=stranded).inc()


def observe_undeliverable(kind: JobKind) -> None:
    UNDELIVERABLE.labels(kind=str(kind)).inc()


def observe_webhook_attempt(outcome: str) -> None:
    WEBHOOK_ATTEMPTS.labels(outcome=outcome).inc()


def observe_dead_letter(reason: str) -> None:
    DEAD_LETTERS.labels(reason=reason).inc()


def observe_refused(reason: str) -> None:
    REFUSED_MESSAGES.labels(reason=reason).inc()


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


def multiprocess_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def start_metrics_server(settings: Settings) -> int | None:
    """Serve ``/metrics`` on FACEAUTH_METRICS_PORT from the worker's main process.

    Jobs run in prefork children, so their samples only reach this process through
    prometheus_client's multiprocess mode: every process writes its values to files in
    PROMETHEUS_MULTIPROC_DIR and the server here merges them on each scrape. The variable
    must be in the worker's environment at start (prometheus_client picks the mode when it
    is imported, before any of our code runs), and the folder is emptied here because
    files left by an earlier run would be added to this run's counters.
    """
    port = settings.metrics_port
    if port <= 0:
        return None
    folder = multiprocess_dir()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink(missing_ok=True)
        if not getattr(values.ValueClass, "_multiprocess", False):
            log.warning(
                "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported;"
                " samples of pool processes will be missing"
            )
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(folder))
    else:
        # Right for the solo and threads pools; with prefork the children's jobs are not seen.
        log.warning("PROMETHEUS_MULTIPROC_DIR is not set: only this process's metrics are served")
        registry = REGISTRY
    start_http_server(port, registry=registry)
    log.info("Prometheus metrics on port %d (multiprocess: %s)", port, folder is not None)
    return port
