"""Webhook events on the wire: body, Standard Webhooks signature, retry schedule, one POST."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from shared.config import Settings
from shared.webhooks import (
    EVENT_DATA_FIELDS,
    backoff_cap_s,
    backoff_s,
    event_body,
    schedule_caps,
    settle,
    signed_headers,
)
from workers.pipeline.webhooks import post_event

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SLOW = -1  # the receiver answers after the sender's timeout
EVENT_ID = "6f1d4a2e-9b7c-4c1e-8a55-1f0e2d3c4b5a"
PAYLOAD = {
    "type": "job.succeeded",
    "timestamp": "2025-01-02T03:04:05.678Z",
    "data": {
        "job_id": "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed",
        "kind": "verify",
        "status": "succeeded",
        "decision": "accept",
        "error_code": None,
        # Never on the wire, whatever the row holds.
        "score": 0.73,
        "similarity": 0.61,
        "embedding": [0.1, 0.2],
    },
    "extra": "dropped",
}


def test_body_holds_only_the_event_fields() -> None:
    doc = json.loads(event_body(PAYLOAD))
    assert set(doc) == {"type", "timestamp", "data"}
    assert doc["data"] == {
        "job_id": "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed",
        "kind": "verify",
        "status": "succeeded",
        "decision": "accept",
    }
    assert set(doc["data"]) <= set(EVENT_DATA_FIELDS)
    assert "score" not in event_body(PAYLOAD) and "embedding" not in event_body(PAYLOAD)


def test_headers_verify_with_standardwebhooks() -> None:
    body = event_body(PAYLOAD)
    headers = signed_headers(SECRET, EVENT_ID, body)
    assert headers["webhook-id"] == EVENT_ID
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("faceauth-webhooks/")
    assert Webhook(SECRET).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("accept", "reject"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43).verify(body, headers)


def test_signature_is_hmac_of_id_timestamp_body() -> None:
    """The spec's construction, computed by hand (what receivers in any language do)."""
    import base64
    import hashlib
    import hmac

    body = event_body(PAYLOAD)
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    headers = signed_headers(SECRET, EVENT_ID, body, now=when)
    assert headers["webhook-timestamp"] == str(int(when.timestamp()))
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{EVENT_ID}.{headers['webhook-timestamp']}.{body}".encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"


def test_stale_timestamp_is_refused_by_receivers() -> None:
    body = event_body(PAYLOAD)
    old = signed_headers(SECRET, EVENT_ID, body, now=datetime.now(UTC) - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(body, old)


def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    assert [backoff_cap_s(n, max_s=3600) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff_cap_s(30, max_s=3600) == 3600
    assert backoff_cap_s(10_000, max_s=3600) == 3600  # no overflow
    rng = random.Random(7)
    waits = [backoff_s(12, max_s=3600, rng=rng) for _ in range(2000)]
    assert 0 <= min(waits) < 100 and 3500 < max(waits) <= 3600
    assert 1500 < sum(waits) / len(waits) < 2100  # uniform over [0, cap]
    caps = schedule_caps(15, 3600)
    assert len(caps) == 14  # 15 attempts: 14 waits
    assert 4 * 3600 < sum(caps) < 6 * 3600  # the schedule spans hours


@pytest.mark.parametrize(
    ("code", "attempts", "permanent", "expected"),
    [
        (200, 1, False, "delivered"),
        (204, 15, False, "delivered"),
        (410, 1, False, "failed"),
        (500, 1, False, "retry"),
        (429, 3, False, "retry"),
        (302, 1, False, "retry"),  # redirects are not followed
        (None, 1, False, "retry"),  # timeout, connection error
        (500, 15, False, "failed"),  # the last allowed attempt
        (None, 1, True, "failed"),  # callback refused, key revoked
    ],
)
def test_settle(code: int | None, attempts: int, permanent: bool, expected: str) -> None:
    s = settle(code, attempts=attempts, max_attempts=15, backoff_max_s=60, permanent=permanent)
    outcome = "delivered" if s.delivered else ("failed" if s.failed else "retry")
    assert outcome == expected
    if outcome == "retry":
        assert s.retry_in_s is not None and 0 <= s.retry_in_s <= 60


# --- one POST against a local receiver ----------------------------------------------------------
class _Receiver(BaseHTTPRequestHandler):
    answers: list[int]
    seen: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        code = self.answers.pop(0) if self.answers else 200
        if code == SLOW:
            time.sleep(1.5)
            code = 200
        self.send_response(code)
        if code == 302:
            self.send_header("location", "http://169.254.169.254/latest/meta-data/")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Handler", (_Receiver,), {"answers": [], "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks?a=1", handler
    finally:
        server.shutdown()
        server.server_close()


def _settings(**overrides: Any) -> Settings:
    return Settings.model_validate({"webhook_timeout_s": 2.0, **overrides})


def test_post_event_sends_the_signed_body(receiver: tuple[str, type[_Receiver]]) -> None:
    url, handler = receiver
    body = event_body(PAYLOAD)
    headers = signed_headers(SECRET, EVENT_ID, body)
    result = post_event(url, body, headers, settings=_settings(webhook_allow_private_networks=True))
    assert (result.status_code, result.error, result.permanent) == (200, None, False)
    assert result.latency_ms is not None and result.latency_ms > 0
    (seen,) = handler.seen
    assert seen["path"] == "/hooks?a=1"
    assert seen["body"] == body.encode()
    received = {k.lower(): v for k, v in seen["headers"].items()}
    assert received["host"] == url.split("/")[2]
    assert Webhook(SECRET).verify(seen["body"], received) == json.loads(body)


def test_post_event_does_not_follow_redirects(receiver: tuple[str, type[_Receiver]]) -> None:
    url, handler = receiver
    handler.answers.extend([302])
    body = event_body(PAYLOAD)
    settings = _settings(webhook_allow_private_networks=True)
    result = post_event(url, body, signed_headers(SECRET, EVENT_ID, body), settings=settings)
    assert (result.status_code, result.error) == (302, "HTTP 302")
    assert len(handler.seen) == 1


def test_loopback_callback_is_refused_without_a_connection(
    receiver: tuple[str, type[_Receiver]],
) -> None:
    url, handler = receiver
    body = event_body(PAYLOAD)
    result = post_event(url, body, signed_headers(SECRET, EVENT_ID, body), settings=_settings())
    assert result.permanent and result.status_code is None
    assert result.error is not None and "loopback" in result.error
    assert handler.seen == []


def test_metadata_callback_is_refused_at_delivery() -> None:
    body = event_body(PAYLOAD)
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/"):
        result = post_event(url, body, signed_headers(SECRET, EVENT_ID, body), settings=_settings())
        assert result.permanent and result.error is not None
        assert "metadata" in result.error


def test_connection_refused_is_retried() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    body = event_body(PAYLOAD)
    result = post_event(
        f"http://127.0.0.1:{port}/",
        body,
        signed_headers(SECRET, EVENT_ID, body),
        settings=_settings(webhook_allow_private_networks=True),
    )
    assert result.status_code is None and not result.permanent
    assert result.error is not None and "connection error" in result.error


def test_a_slow_receiver_times_out_and_is_retried(receiver: tuple[str, type[_Receiver]]) -> None:
    url, handler = receiver
    handler.answers.append(SLOW)
    body = event_body(PAYLOAD)
    settings = _settings(webhook_allow_private_networks=True, webhook_timeout_s=0.3)
    result = post_event(url, body, signed_headers(SECRET, EVENT_ID, body), settings=settings)
    assert result.status_code is None and not result.permanent
    assert result.error == "timeout: ReadTimeout"
    assert result.latency_ms is not None and 250 < result.latency_ms < 1400
