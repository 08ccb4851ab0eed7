"""The worker's Celery application (configuration in ``shared/celery_config.py``)."""

from __future__ import annotations

import json
import logging
import os
import threading
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
def _configure_worker(conf: Any = None, **_: Any) -> None:
    """Worker-only settings: the hardened consumer transport and our log level.

    The transport drops malformed messages instead of dying on them; it is set only when
    this process becomes a worker, since Flower and other tools load the same app and
    need the plain ``redis://`` transport name.
    """
    if conf is not None:
        conf.broker_transport = "workers.broker:Transport"
    level = get_settings().log_level.upper()
    for name in ("shared", "workers"):
        logging.getLogger(name).setLevel(level)


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
    """Prometheus exposition in the main process (FACEAUTH_METRICS_PORT > 0).

    Connected before the model check: that check records load times, which in multiprocess
    mode needs the folder this creates.
    """
    from workers.metrics import start_metrics_server

    start_metrics_server(get_settings())


_model_versions: dict[str, str] = {}


@worker_init.connect
def _check_models_on_start(**_: Any) -> None:
    """Load and check the models in the main process before the worker takes any job.

    A wrong FACEAUTH_FACE_PACK_DIR or a broken liveness model stops the worker with one
    log line instead of a healthy-looking worker that fails every job. The check's
    sessions are dropped before the pool forks (ONNX Runtime sessions must not cross a
    fork); each pool child loads its own, see ``_init_process``.
    """
    settings = get_settings()
    if not settings.worker_load_models_at_start:
        return
    from workers.runtime import WorkerRuntime

    check = WorkerRuntime(settings, record_metrics=False)
    try:
        _model_versions.update(check.load_models())
    except Exception as exc:
        log.critical("models could not be loaded, stopping: %s", exc)
        raise SystemExit(1) from exc
    finally:
        del check
    log.info("models checked: %s", _model_versions)


@worker_ready.connect
def _write_ready_file(**_: Any) -> None:
    """Tell the container healthcheck every start check passed (schema, models)."""
    path = get_settings().worker_ready_file
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"pid": os.getpid(), "models": _model_versions}) + "\n")


@worker_shutdown.connect
def _remove_ready_file(**_: Any) -> None:
    path = get_settings().worker_ready_file
    if path is not None:
        path.unlink(missing_ok=True)


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
    """Fresh per-process resources; with the start check on, load the models right away.

    Loading runs in a thread so the pool's start-up handshake is not held up; a job
    that arrives first waits for it on the runtime's lock.
    """
    from workers.runtime import on_process_start, runtime

    on_process_start()
    if get_settings().worker_load_models_at_start:
        threading.Thread(target=_warm_up, args=(runtime(),), daemon=True).start()


def _warm_up(rt: Any) -> None:
    try:
        rt.load_models()
    except Exception as exc:  # the main process checked them; a job will report it
        log.error("pool process could not load the models: %s", exc)


@worker_process_shutdown.connect
def _shutdown_process(**_: Any) -> None:
    from shared.db.pool import close_pool

    close_pool()
