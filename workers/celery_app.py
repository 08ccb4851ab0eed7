"""The worker's Celery application (configuration in ``shared/celery_config.py``)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_process_shutdown

from shared.celery_config import celery_config
from shared.config import Settings, get_settings

log = logging.getLogger(__name__)


def build_app(settings: Settings) -> Celery:
    # Task modules import ``app`` from here, so they are listed for the worker to import
    # after this module finished loading rather than imported now.
    app = Celery("faceauth", include=["workers.tasks"])
    app.conf.update(celery_config(settings))
    return app


app = build_app(get_settings())


@worker_init.connect
def _migrate_on_start(**_: Any) -> None:
    """Apply pending migrations and create the bucket in the main process, before any task.

    Failing here (database or S3 unreachable) stops the worker with a clear log line;
    the orchestrator restarts it, which is better than accepting jobs it cannot finish.
    """
    from shared.db.migrations import apply_migrations
    from shared.storage import ImageStore

    settings = get_settings()
    applied = apply_migrations(settings.database_dsn())
    if applied:
        log.info("migrations applied: %s", applied)
    ImageStore.from_settings(settings).ensure_bucket()


@worker_init.connect
def _start_metrics(**_: Any) -> None:
    """Prometheus exposition in the main process (FACEAUTH_METRICS_PORT > 0)."""
    from workers.metrics import start_metrics_server

    start_metrics_server(get_settings())


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    from workers.runtime import on_process_start

    on_process_start()


@worker_process_shutdown.connect
def _shutdown_process(**_: Any) -> None:
    from shared.db.pool import close_pool

    close_pool()
