"""Webhook events as they go on the wire: body, Standard Webhooks headers, retry schedule.

The pure parts of delivery (no I/O): the outbox row's payload becomes a compact JSON
body holding only the event's type, timestamp and the job's id, kind, status, decision
and error code (never embeddings, images or scores, whatever the row holds); the body
is signed per the Standard Webhooks spec (https://www.standardwebhooks.com/):
``webhook-id`` is the event id, the same on every attempt so receivers can dedupe,
``webhook-timestamp`` the attempt's Unix time, ``webhook-signature`` ``v1,<base64
HMAC-SHA256 of "id.timestamp.body">`` under the key's ``whsec_`` secret. What an answer
means for the event, and when to try again (exponential backoff, full jitter), is
decided here too; the sending lives in ``workers/pipeline/webhooks.py``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook

EVENT_TYPES = frozenset({"job.succeeded", "job.failed"})
# What the ``data`` object of an event may carry; anything else in the row is dropped.
EVENT_DATA_FIELDS = ("job_id", "kind", "status", "decision", "error_code")
USER_AGENT = "faceauth-webhooks/1.0"
# First retry waits up to this long; each attempt doubles the cap up to webhook_backoff_max_s.
BACKOFF_BASE_S = 5.0
GONE = 410  # the receiver asks us to stop: the event fails without further attempts


def event_document(payload: dict[str, Any]) -> dict[str, Any]:
    """The event as sent: type, timestamp and the allowed job fields only."""
    data = payload.get("data") or {}
    return {
        "type": payload.get("type"),
        "timestamp": payload.get("timestamp"),
        "data": {k: data[k] for k in EVENT_DATA_FIELDS if data.get(k) is not None},
    }


def event_body(payload: dict[str, Any]) -> str:
    """The exact request body (compact JSON, keys sorted): what the signature covers."""
    return json.dumps(event_document(payload), separators=(",", ":"), sort_keys=True)


def signed_headers(
    secret: str, event_id: str, body: str, *, now: datetime | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for one attempt, plus content type and user agent."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    signature = Webhook(secret).sign(event_id, when, body)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def backoff_cap_s(attempts: int, *, max_s: float, base_s: float = BACKOFF_BASE_S) -> float:
    """The longest wait after ``attempts`` failed attempts: base * 2^(attempts-1), capped."""
    exponent = min(max(attempts - 1, 0), 60)
    return float(min(max_s, base_s * 2.0**exponent))


def backoff_s(
    attempts: int,
    *,
    max_s: float,
    base_s: float = BACKOFF_BASE_S,
    rng: random.Random | None = None,
) -> float:
    """Full jitter: a uniform wait between 0 and the exponential cap (AWS architecture blog)."""
    cap = backoff_cap_s(attempts, max_s=max_s, base_s=base_s)
    return (rng or random).uniform(0.0, cap)


@dataclass(frozen=True)
class Settlement:
    """What one attempt does to its event."""

    delivered: bool
    retry_in_s: float | None  # None: settled (delivered, or failed for good)

    @property
    def failed(self) -> bool:
        return not self.delivered and self.retry_in_s is None


def settle(
    status_code: int | None,
    *,
    attempts: int,
    max_attempts: int,
    backoff_max_s: float,
    permanent: bool = False,
    rng: random.Random | None = None,
) -> Settlement:
    """The event's fate after its ``attempts``-th attempt answered ``status_code``.

    2xx: delivered. 410 Gone, or a ``permanent`` refusal (callback URL refused, key
    revoked): failed, no retry. Anything else (other status, timeout, connection error:
    ``status_code`` None): retried after a full-jitter backoff, unless this was the
    last allowed attempt.
    """
    if status_code is not None and 200 <= status_code < 300:
        return Settlement(delivered=True, retry_in_s=None)
    if permanent or status_code == GONE or attempts >= max_attempts:
        return Settlement(delivered=False, retry_in_s=None)
    return Settlement(delivered=False, retry_in_s=backoff_s(attempts, max_s=backoff_max_s, rng=rng))


def schedule_caps(max_attempts: int, backoff_max_s: float) -> list[float]:
    """The longest wait before each retry (for documentation and ``webhooks show``)."""
    return [backoff_cap_s(n, max_s=backoff_max_s) for n in range(1, max_attempts)]
