"""What ``faceauth status`` shows: queue depths, live workers, recent job counts and errors.

Every probe has a short timeout and reports its own failure instead of raising,
so the command still says what it *can* see when one component is down.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
import redis
from celery import Celery

from shared.celery_config import celery_config
from shared.config import Settings
from shared.db import jobs as job_repo

# kombu's Redis transport keeps one list per priority step; a message without a priority
# lands in the bare queue name, the others in "<queue>\x06\x16<step>".
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
_UNACKED_KEY = "unacked"  # hash of messages delivered to a worker but not yet acknowledged


@dataclass
class WorkerStatus:
    name: str
    queues: list[str] = field(default_factory=list)
    active_tasks: int | None = None


@dataclass
class StatusReport:
    since_s: int
    queues: dict[str, int] | None = None  # ready messages per queue
    unacked: int | None = None  # delivered, not yet acknowledged (running or prefetched)
    workers: list[WorkerStatus] | None = None
    jobs_by_status: dict[str, int] | None = None
    error_codes: dict[str, int] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems and bool(self.workers)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["healthy"] = self.healthy
        return data


def queue_depths(client: redis.Redis, queues: list[str]) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.llen(queue)
        for step in _PRIORITY_STEPS:
            pipe.llen(f"{queue}{_PRIORITY_SEP}{step}")
    counts = pipe.execute()
    per_queue = 1 + len(_PRIORITY_STEPS)
    return {
        queue: int(sum(counts[i * per_queue : (i + 1) * per_queue]))
        for i, queue in enumerate(queues)
    }


def probe_broker(settings: Settings, report: StatusReport, timeout: float) -> None:
    queues = [settings.queue_inference, settings.queue_io]
    try:
        client = redis.Redis.from_url(
            settings.broker_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        try:
            report.queues = queue_depths(client, queues)
            report.unacked = int(client.hlen(_UNACKED_KEY))
        finally:
            client.close()
    except redis.RedisError as exc:
        report.problems.append(f"broker unreachable ({type(exc).__name__})")


def probe_workers(settings: Settings, report: StatusReport, timeout: float) -> None:
    app = Celery("faceauth-status")
    app.conf.update(celery_config(settings))
    app.conf.broker_connection_retry_on_startup = False
    app.conf.broker_connection_timeout = timeout
    try:
        replies = app.control.ping(timeout=timeout) or []
        names = sorted(name for reply in replies for name in reply)
        workers = {name: WorkerStatus(name) for name in names}
        if names:
            inspect = app.control.inspect(destination=names, timeout=timeout, limit=len(names))
            for name, queues in (inspect.active_queues() or {}).items():
                if name in workers:
                    workers[name].queues = sorted(q["name"] for q in queues)
            for name, tasks in (inspect.active() or {}).items():
                if name in workers:
                    workers[name].active_tasks = len(tasks)
        report.workers = list(workers.values())
        if not names:
            report.problems.append("no worker answered")
    except Exception as exc:  # kombu raises several unrelated types for a dead broker
        report.problems.append(f"workers could not be asked ({type(exc).__name__})")
    finally:
        app.close()


def probe_database(settings: Settings, report: StatusReport) -> None:
    try:
        with psycopg.connect(settings.database_dsn(), connect_timeout=5) as conn:
            report.jobs_by_status = job_repo.counts_by_status(conn, report.since_s)
            report.error_codes = job_repo.error_counts(conn, report.since_s)
    except psycopg.Error as exc:
        report.problems.append(f"database unreachable ({type(exc).__name__})")


def collect_status(
    settings: Settings, *, since_s: int = 3600, timeout: float = 1.0
) -> StatusReport:
    report = StatusReport(since_s=since_s)
    probe_broker(settings, report, timeout)
    probe_workers(settings, report, timeout)
    probe_database(settings, report)
    return report
