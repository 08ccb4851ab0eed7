"""The reconciler thread of a worker's main process: re-publishes stranded jobs.

Each sweep also sends due webhook events to the IO queue (``dispatch_webhooks``).

Every worker runs one (``FACEAUTH_RECONCILER_ENABLED``); several at once are safe
because each sweep locks the rows it publishes (SKIP LOCKED) and moves their lease
forward. It lives in the main process, not a pool child, so a busy or killed child
does not stop it, and it needs no extra process to deploy (no Celery beat).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import psycopg

from shared.config import Settings
from shared.delivery import (
    celery_publisher,
    celery_task_publisher,
    dispatch_webhooks,
    reconcile_once,
)
from workers import metrics

log = logging.getLogger(__name__)


class Reconciler(threading.Thread):
    def __init__(self, settings: Settings, celery_app: Any) -> None:
        super().__init__(name="faceauth-reconciler", daemon=True)
        self._settings = settings
        self._publish = celery_publisher(celery_app)
        self._publish_task = celery_task_publisher(celery_app)
        self._stopping = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._failing = False

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self.join(timeout)

    def run(self) -> None:
        log.info(
            "reconciler: every %.1fs (lease %ss, queued timeout %ss, max publishes %d)",
            self._settings.reconcile_interval_s,
            self._settings.job_lease_s,
            self._settings.job_queued_timeout_s,
            self._settings.job_max_publishes,
        )
        while not self._stopping.wait(self._settings.reconcile_interval_s):
            self.sweep()
        self._close()

    def sweep(self) -> None:
        try:
            conn = self._connection()
            report = reconcile_once(conn, self._publish, self._settings)
            dispatch_webhooks(conn, self._publish_task, self._settings)
        except psycopg.Error as exc:
            # The database is down: nothing to decide until it is back. One line per outage.
            if not self._failing:
                log.warning("reconciler: database unreachable (%s)", type(exc).__name__)
            self._failing = True
            self._close()
            return
        if self._failing:
            log.info("reconciler: database reachable again")
            self._failing = False
        for _job_id, kind, status in report.republished:
            metrics.observe_republished(kind, status)
        for _job_id, kind in report.failed:
            metrics.observe_undeliverable(kind)

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self._settings.database_dsn(), autocommit=True, connect_timeout=5
            )
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
