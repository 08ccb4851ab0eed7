"""The worker's Celery application (configuration in ``shared/celery_config.py``)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import (
    celeryd_init,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

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


@celeryd_init.connect
def _harden_consumer(conf: Any = None, **_: Any) -> None:
    """Workers consume with the transport that drops malformed messages instead of dying.

    Set only when this process becomes a worker: Flower and other tools load the same app
    and need the plain ``redis://`` transport name.
    """
    if conf is not None:
        conf.broker_transport = "workers.broker:Transport"


@worker_init.connect
def _migrate_on_start(**_: Any) -> None:
    """Check the schema is current and create the bucket, in the main process, before any task.

    Workers connect as the application role, which may not change the schema: migrations
    are ``faceauth db migrate``'s job (the compose ``migrate`` service, the dev stack's
    start). This check is read-only. A schema that is behind, or a database that cannot be
    reached, stops the worker with one clear log line (a signal handler's exception would
    only be logged by Celery): the orchestrator restarts it, which is better than
    accepting jobs it cannot finish.
    """
    from shared.db.migrations import pending_migrations
    from shared.storage import ImageStore

    settings = get_settings()
    try:
        pending = pending_migrations(settings.database_dsn())
    except Exception as exc:  # psycopg errors and MigrationError alike end the worker
        log.critical("cannot check the database schema, stopping: %s", exc)
        raise SystemExit(1) from exc
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        log.critical("schema is behind: run `faceauth db migrate` (pending: %s)", names)
        raise SystemExit(1)
    ImageStore.from_settings(settings).ensure_bucket()


@worker_init.connect
def _start_metrics(**_: Any) -> None:
    """Prometheus exposition in the main process (FACEAUTH_METRICS_PORT > 0)."""
    from workers.metrics import start_metrics_server

    start_metrics_server(get_settings())


_reconciler: Any = None


@worker_ready.connect
def _start_reconciler(**_: Any) -> None:
    """Re-publish stranded jobs from the main process (after the pool has forked)."""
    global _reconciler
    settings = get_settings()
    if not settings.reconciler_enabled:
        return
    from workers.reconciler import Reconciler

    _reconciler = Reconciler(settings, app)
    _reconciler.start()


@worker_shutdown.connect
def _stop_reconciler(**_: Any) -> None:
    if _reconciler is not None:
        _reconciler.stop()


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    from workers.runtime import on_process_start

    on_process_start()


@worker_process_shutdown.connect
def _shutdown_process(**_: Any) -> None:
    from shared.db.pool import close_pool

    close_pool()
