"""Sending job messages, and sending them again when Postgres says a job was stranded.

Postgres is the source of truth for delivery; the broker only carries messages.
A job without an outcome whose lease ran out lost its message (it stayed
``queued``: a broker restart without persistence, a producer that died between
the row and the message) or its worker (it stayed ``running``: a killed worker
process). ``reconcile_once`` publishes such jobs again under the same task id, so
the task stays idempotent, and ends a job that was published
``FACEAUTH_JOB_MAX_PUBLISHES`` times with ``delivery_attempts_exhausted``.

The same sweep hands due webhook events to the IO queue (``dispatch_webhooks``): the
outbox row was written with the job's outcome, and claiming it moves its next attempt a
claim window ahead, so an event whose sender died is simply claimed again later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg

from shared.config import Settings
from shared.db import jobs as job_repo
from shared.db import webhooks as webhook_repo
from shared.schemas import JOBS, WEBHOOK_TASK, JobKind

log = logging.getLogger(__name__)

Publisher = Callable[[JobKind, UUID, dict[str, Any]], None]
# Sends one task that is not a job (task name, keyword arguments); routed by task_routes.
TaskPublisher = Callable[[str, dict[str, Any]], None]


def message_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The JSON a task message carries: the request without its unset fields."""
    return {k: v for k, v in payload.items() if v is not None}


def celery_publisher(celery: Any) -> Publisher:
    """Publish through a Celery app (routing comes from its ``task_routes``)."""

    def publish(kind: JobKind, job_id: UUID, payload: dict[str, Any]) -> None:
        celery.send_task(
            JOBS[kind].task_name,
            kwargs={"payload": message_payload(payload)},
            task_id=str(job_id),
        )

    return publish


def celery_task_publisher(celery: Any) -> TaskPublisher:
    """Send internal tasks (webhook delivery) through a Celery app."""

    def publish(task_name: str, kwargs: dict[str, Any]) -> None:
        celery.send_task(task_name, kwargs=kwargs)

    return publish


@dataclass
class ReconcileReport:
    # (job, kind, status it was stranded in): queued = lost message, running = dead worker
    republished: list[tuple[UUID, JobKind, str]] = field(default_factory=list)
    failed: list[tuple[UUID, JobKind]] = field(default_factory=list)
    publish_errors: int = 0


def reconcile_once(
    conn: psycopg.Connection, publish: Publisher, settings: Settings, *, limit: int = 500
) -> ReconcileReport:
    """One sweep: fail jobs published too often, publish the other stranded ones again."""
    report = ReconcileReport()
    message = (
        f"no worker finished this job after {settings.job_max_publishes} deliveries"
        " (its worker died each time, or no worker serves its queue)"
    )
    with conn.transaction():
        failed = job_repo.fail_undeliverable(
            conn, max_publishes=settings.job_max_publishes, message=message
        )
    report.failed = failed
    for job_id, kind in failed:
        log.warning("job %s (%s) failed: delivery attempts exhausted", job_id, kind)
    with conn.transaction():
        stranded = job_repo.lock_stranded(
            conn, max_publishes=settings.job_max_publishes, limit=limit
        )
        for job in stranded:
            try:
                publish(job.kind, job.job_id, job.payload)
            except Exception as exc:  # broker down: keep what was sent, retry on the next sweep
                report.publish_errors += 1
                log.warning("could not re-publish job %s: %s", job.job_id, type(exc).__name__)
                break
            job_repo.mark_republished(
                conn, job.job_id, queued_timeout_s=settings.job_queued_timeout_s
            )
            report.republished.append((job.job_id, job.kind, str(job.status)))
            log.info(
                "job %s (%s) was %s past its lease: published again (%d)",
                job.job_id,
                job.kind,
                job.status,
                job.publish_count + 1,
            )
    return report


def webhook_claim_s(settings: Settings) -> float:
    """How long a dispatched event stays claimed: time for its message to be sent and run.

    A sender that dies mid-attempt leaves the event due again after this window; a
    sender that finishes settles it (or schedules its retry) long before.
    """
    return settings.webhook_timeout_s * 3


def dispatch_webhooks(
    conn: psycopg.Connection, publish: TaskPublisher, settings: Settings, *, limit: int = 500
) -> int:
    """Send one ``faceauth.deliver_webhook`` message per due event; the number sent.

    The claim is committed before any message goes out, so two reconcilers never send
    the same event in one window. An event whose message could not be sent (broker
    down) stays claimed for one window and is then due again: nothing is lost.
    """
    with conn.transaction():
        due = webhook_repo.claim_due(conn, claim_s=webhook_claim_s(settings), limit=limit)
    sent = 0
    for event_id in due:
        try:
            publish(WEBHOOK_TASK, {"event_id": str(event_id)})
        except Exception as exc:  # broker down: the claim runs out, the next sweep resends
            log.warning("could not send webhook event %s: %s", event_id, type(exc).__name__)
            break
        sent += 1
    if sent:
        log.debug("dispatched %d webhook event(s)", sent)
    return sent
