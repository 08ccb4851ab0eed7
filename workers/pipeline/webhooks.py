"""Delivering one webhook event: check the callback, POST the signed event, record the attempt.

Not a job: the event's durable record is its outbox row (``shared/db/webhooks.py``). The
reconciler claims due events and sends one ``faceauth.deliver_webhook`` message each;
this runs that message. At least once: the event row is locked while its POST is in
flight (a second message for it finds the lock and returns), and a sender that dies
leaves the row pending, due again after its claim window, with the same ``webhook-id``.

The callback URL is checked again right before connecting (``shared/net_guard.py``), and
the connection goes to the very address that was checked (the URL's host is kept for the
Host header and TLS SNI/certificate checks), so a name that resolves to a public address
for the check and to an internal one a moment later (DNS rebinding) cannot steer the
POST inside. Redirects are not followed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from uuid import UUID

import httpx
import psycopg

from shared import net_guard
from shared.config import Settings
from shared.db import api_keys
from shared.db import webhooks as webhook_repo
from shared.db.pool import get_pool
from shared.webhooks import Settlement, event_body, settle, signed_headers

log = logging.getLogger(__name__)

_ERROR_CHARS = 500


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    latency_ms: float | None
    error: str | None
    permanent: bool = False  # refused before sending: retrying would not help


@dataclass(frozen=True)
class DeliveryOutcome:
    event_id: UUID
    outcome: str  # delivered | retry | failed | skipped (settled or held by another sender)
    attempt: AttemptResult | None = None


def _short(text: str) -> str:
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


def _pinned_url(url: httpx.URL, address: net_guard.IPAddress) -> httpx.URL:
    return url.copy_with(host=str(address))


def post_event(
    url: str,
    body: str,
    headers: dict[str, str],
    *,
    settings: Settings,
    client: httpx.Client | None = None,
) -> AttemptResult:
    """Check ``url`` now, POST ``body`` to an address it resolves to, and say what happened."""
    started = time.perf_counter()
    try:
        addresses = net_guard.resolve_callback(
            url, allow_private=settings.webhook_allow_private_networks
        )
    except ValueError as exc:
        return AttemptResult(None, None, _short(f"callback refused: {exc}"), permanent=True)
    target = httpx.URL(url)
    host = target.host
    request_headers = {**headers, "host": target.netloc.decode("ascii")}
    extensions = {"sni_hostname": host} if target.scheme == "https" else {}
    own_client = client is None
    http = client or httpx.Client(
        timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False
    )
    error = "no address to connect to"
    try:
        for address in addresses:
            request = http.build_request(
                "POST",
                _pinned_url(target, address),
                content=body.encode("utf-8"),
                headers=request_headers,
                extensions=extensions,
            )
            try:
                response = http.send(request, stream=True, follow_redirects=False)
            except httpx.ConnectError as exc:  # try the host's next address
                error = f"connection error ({address}): {exc or type(exc).__name__}"
                continue
            except httpx.TimeoutException as exc:
                latency = (time.perf_counter() - started) * 1000
                return AttemptResult(None, latency, _short(f"timeout: {type(exc).__name__}"))
            except httpx.HTTPError as exc:
                latency = (time.perf_counter() - started) * 1000
                return AttemptResult(
                    None, latency, _short(f"{type(exc).__name__}: {exc or 'HTTP error'}")
                )
            # The answer's status is all that counts; its body is not read.
            response.close()
            latency = (time.perf_counter() - started) * 1000
            code = response.status_code
            return AttemptResult(code, latency, None if 200 <= code < 300 else f"HTTP {code}")
    finally:
        if own_client:
            http.close()
    latency = (time.perf_counter() - started) * 1000
    return AttemptResult(None, latency, _short(error))


def deliver_event(
    event_id: UUID, settings: Settings, *, client: httpx.Client | None = None
) -> DeliveryOutcome:
    """One attempt at one event (idempotent: a settled or busy event is left alone)."""
    with get_pool(settings).connection() as conn, conn.transaction():
        if not webhook_repo.lock_pending(conn, event_id):
            return DeliveryOutcome(event_id, "skipped")
        event = webhook_repo.get_event(conn, event_id)
        if event is None:
            return DeliveryOutcome(event_id, "skipped")
        secret = api_keys.webhook_secret(conn, event.api_key_id) if event.callback_url else None
        if event.callback_url is None:
            result = AttemptResult(None, None, "api key revoked or has no callback", True)
        elif secret is None:
            result = AttemptResult(None, None, "api key has no webhook secret", True)
        else:
            try:
                body = event_body(event.payload)
                headers = signed_headers(secret, str(event.event_id), body)
                result = post_event(
                    event.callback_url, body, headers, settings=settings, client=client
                )
            except Exception as exc:  # recorded as an attempt, so the event still runs out
                log.exception("webhook %s: could not send", event_id)
                result = AttemptResult(None, None, _short(f"internal error: {exc!r}"))
        outcome = _record(conn, event, result, settings)
    log.info(
        "webhook %s (job %s) attempt %d: %s%s",
        event_id,
        event.job_id,
        event.attempts + 1,
        outcome,
        f" ({result.error})" if result.error else "",
    )
    return DeliveryOutcome(event_id, outcome, result)


def _record(
    conn: psycopg.Connection,
    event: webhook_repo.WebhookEvent,
    result: AttemptResult,
    settings: Settings,
) -> str:
    attempts = event.attempts + 1
    settlement: Settlement = settle(
        result.status_code,
        attempts=attempts,
        max_attempts=settings.webhook_max_attempts,
        backoff_max_s=settings.webhook_backoff_max_s,
        permanent=result.permanent,
    )
    error = result.error
    if settlement.failed and not result.permanent and result.status_code != 410:
        error = f"{error}; gave up after {attempts} attempts"
    webhook_repo.record_attempt(
        conn,
        event.event_id,
        status_code=result.status_code,
        latency_ms=None if result.latency_ms is None else round(result.latency_ms, 2),
        error=error,
        delivered=settlement.delivered,
        retry_in_s=settlement.retry_in_s,
    )
    if settlement.delivered:
        return "delivered"
    return "failed" if settlement.failed else "retry"
