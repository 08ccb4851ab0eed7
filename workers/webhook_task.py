"""The ``faceauth.deliver_webhook`` task: one delivery attempt of one outbox event.

Not a job kind (no job row, no outcome of its own): the reconciler sends one message per
due event (``shared.delivery.dispatch_webhooks``), routed to the IO queue by
``INTERNAL_TASKS``. Its state lives in the outbox, so the task never retries through
Celery: a failed attempt is scheduled again in the row, and a task that dies leaves the
row due again after its claim window.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from shared.config import get_settings
from shared.schemas import WEBHOOK_TASK
from workers import metrics
from workers.celery_app import app
from workers.pipeline.webhooks import deliver_event

log = logging.getLogger(__name__)


@app.task(name=WEBHOOK_TASK, ignore_result=True)
def deliver_webhook(*args: Any, **kwargs: Any) -> str:
    """Deliver the event ``event_id`` once; returns delivered, retry, failed or skipped."""
    event_id = kwargs.get("event_id")
    try:
        parsed = UUID(str(event_id)) if not args and set(kwargs) == {"event_id"} else None
    except ValueError:
        parsed = None
    if parsed is None:
        log.warning("%s: ignoring a message without a valid event_id", WEBHOOK_TASK)
        return "invalid"
    outcome = deliver_event(parsed, get_settings())
    if outcome.outcome != "skipped":
        metrics.observe_webhook_attempt(outcome.outcome)
    return outcome.outcome
