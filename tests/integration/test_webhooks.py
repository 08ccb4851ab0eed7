"""Webhooks on the real stack: every finished job of a key is POSTed, signed, at least once.

A receiver (``http.server`` on a loopback port; the test worker runs with
``FACEAUTH_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true`` and a 1 s backoff cap) records every
request; each test gets its own API key whose callback points at it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from standardwebhooks import Webhook
from typer.testing import CliRunner

from shared.cli import app
from shared.db import api_keys
from shared.producer import Origin
from shared.webhooks import EVENT_DATA_FIELDS

from .conftest import LiveStack

pytestmark = pytest.mark.integration

HANG = -1  # an answer that holds the request until released, then answers 503


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def job_id(self) -> str:
        return str(self.event["data"]["job_id"])

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """A webhook receiver answering from a script (status codes, HANG), then 200."""

    url: str = ""
    answers: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    release: threading.Event = field(default_factory=threading.Event)

    def handle(self, handler: BaseHTTPRequestHandler) -> int:
        body = handler.rfile.read(int(handler.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self.changed:
            self.requests.append(Received(headers, body))
            answer = self.answers.pop(0) if self.answers else 200
            self.changed.notify_all()
        if answer == HANG:
            self.release.wait(60)
            return 503
        return answer

    def wait_for(self, count: int, timeout: float = 60) -> list[Received]:
        with self.changed:
            ok = self.changed.wait_for(lambda: len(self.requests) >= count, timeout)
            assert ok, f"{len(self.requests)} webhook requests, expected {count}"
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            code = state.handle(self)
            try:
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:  # the sender died while we held its request
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/{uuid4().hex[:8]}"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


def _new_key(live: LiveStack, callback_url: str | None) -> api_keys.NewKey:
    with psycopg.connect(live.settings.database_dsn(), autocommit=True) as conn:
        return api_keys.create_key(
            conn,
            name=f"webhooks-{uuid4().hex[:6]}",
            scopes={api_keys.Scope.ADMIN},
            callback_url=callback_url,
        )


def _photo(faces: Path, person: str = "biden", index: int = 0) -> bytes:
    return sorted((faces / "identities" / person).iterdir())[index].read_bytes()


def _events(live: LiveStack, job_id: UUID) -> list[tuple[Any, ...]]:
    return live.sql(
        "SELECT event_id, status, attempts FROM webhook_events WHERE job_id = %s", job_id
    )


def _attempts(live: LiveStack, job_id: UUID) -> list[tuple[Any, ...]]:
    return live.sql(
        "SELECT a.attempt, a.status_code, a.latency_ms, a.error FROM webhook_attempts a"
        " JOIN webhook_events e USING (event_id) WHERE e.job_id = %s ORDER BY a.attempt",
        job_id,
    )


def _wait_event_status(
    live: LiveStack, job_id: UUID, status: str, timeout: float = 60
) -> tuple[Any, ...]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _events(live, job_id)
        if rows and rows[0][1] == status:
            assert len(rows) == 1
            return rows[0]
        time.sleep(0.1)
    raise AssertionError(f"webhook event of job {job_id} not {status}: {_events(live, job_id)}")


def _verify(secret: str | None, received: Received) -> dict[str, Any]:
    assert secret is not None and secret.startswith("whsec_")
    assert received.headers["content-type"] == "application/json"
    assert received.headers["user-agent"].startswith("faceauth-webhooks/")
    assert received.headers["webhook-signature"].startswith("v1,")
    return dict(Webhook(secret).verify(received.body, received.headers))


def test_every_finished_job_of_the_key_is_posted_signed(
    live: LiveStack, faces: Path, receiver: Receiver
) -> None:
    key = _new_key(live, receiver.url)
    origin = Origin(api_key_id=key.key.key_id)
    client = live.client
    user = f"hook-{uuid4().hex[:6]}"
    enrolled = client.wait(
        client.submit_enrollment(user, [_photo(faces)], liveness=False, origin=origin), 120
    )
    verified = client.wait(
        client.submit_verification(user, _photo(faces, index=1), liveness=False, origin=origin),
        120,
    )
    unknown = client.wait(
        client.submit_verification(
            f"nobody-{uuid4().hex[:6]}", _photo(faces), liveness=False, origin=origin
        ),
        120,
    )
    inspected = client.wait(client.submit_inspection(_photo(faces), origin=origin), 120)
    # A job of nobody's key and one of a key without a callback announce nothing.
    silent_key = _new_key(live, None)
    silent = client.wait(
        client.submit_inspection(_photo(faces), origin=Origin(api_key_id=silent_key.key.key_id)),
        120,
    )
    anonymous = client.wait(client.submit_inspection(_photo(faces)), 120)
    jobs = [enrolled, verified, unknown, inspected]
    assert [j.status for j in jobs] == ["succeeded", "succeeded", "failed", "succeeded"]

    requests = receiver.wait_for(len(jobs))
    by_job = {r.job_id: r for r in requests}
    assert set(by_job) == {str(j.job_id) for j in jobs}
    for job in jobs:
        received = by_job[str(job.job_id)]
        event = _verify(key.webhook_secret, received)
        data = event["data"]
        assert event["type"] == f"job.{job.status}"
        assert set(event) == {"type", "timestamp", "data"}
        assert set(data) <= set(EVENT_DATA_FIELDS)
        assert (data["job_id"], data["kind"], data["status"]) == (
            str(job.job_id),
            str(job.kind),
            str(job.status),
        )
        assert data.get("error_code") == (job.error or {}).get("code")
        for word in ("score", "similarity", "embedding", "image_key", "liveness", "result"):
            assert word not in received.body.decode()
        (event_id, _status, attempts) = _wait_event_status(live, job.job_id, "delivered")
        assert received.webhook_id == str(event_id) and attempts == 1
        ((attempt, code, latency, error),) = _attempts(live, job.job_id)
        assert (attempt, code, error) == (1, 200, None) and latency is not None
    assert by_job[str(verified.job_id)].event["data"]["decision"] in ("accept", "step_up", "reject")
    assert by_job[str(verified.job_id)].event["data"].get("decision") == (
        verified.result or {}
    ).get("decision")
    assert by_job[str(unknown.job_id)].event["data"]["error_code"] == "unknown_user"
    time.sleep(1.5)  # several reconciler sweeps: nothing more arrives
    assert len(receiver.requests) == len(jobs)
    assert _events(live, silent.job_id) == [] and _events(live, anonymous.job_id) == []


def test_an_event_is_retried_until_the_receiver_accepts_it(
    live: LiveStack, faces: Path, receiver: Receiver
) -> None:
    receiver.answers.extend([500, 503])
    key = _new_key(live, receiver.url)
    job = live.client.wait(
        live.client.submit_inspection(_photo(faces), origin=Origin(api_key_id=key.key.key_id)),
        120,
    )
    requests = receiver.wait_for(3)
    event_id, _status, attempts = _wait_event_status(live, job.job_id, "delivered")
    assert attempts == 3
    assert {r.webhook_id for r in requests} == {str(event_id)}
    for r in requests:  # each attempt is signed afresh (its own timestamp)
        _verify(key.webhook_secret, r)
    rows = _attempts(live, job.job_id)
    assert [(a, code) for a, code, _lat, _err in rows] == [(1, 500), (2, 503), (3, 200)]
    assert [err for *_, err in rows] == ["HTTP 500", "HTTP 503", None]
    assert all(lat is not None and lat >= 0 for _a, _c, lat, _e in rows)
    time.sleep(1.5)
    assert len(receiver.requests) == 3


def test_a_revoked_keys_pending_event_is_not_delivered(
    live: LiveStack, faces: Path, receiver: Receiver
) -> None:
    receiver.answers.append(HANG)  # hold the first attempt while the key is revoked
    key = _new_key(live, receiver.url)
    job = live.client.wait(
        live.client.submit_inspection(_photo(faces), origin=Origin(api_key_id=key.key.key_id)),
        120,
    )
    receiver.wait_for(1)
    with psycopg.connect(live.settings.database_dsn(), autocommit=True) as conn:
        assert api_keys.revoke_key(conn, key.key.key_id)
    receiver.release.set()  # the held attempt is answered 503: to be retried
    _event_id, _status, attempts = _wait_event_status(live, job.job_id, "failed")
    rows = _attempts(live, job.job_id)
    assert attempts == len(rows) == 2
    assert rows[0][1:2] == (503,) and rows[0][3] == "HTTP 503"
    assert rows[1][1] is None and "revoked" in rows[1][3]
    time.sleep(1.5)
    assert len(receiver.requests) == 1


def test_a_sender_killed_mid_delivery_delivers_again_with_the_same_id(
    live: LiveStack, faces: Path, receiver: Receiver
) -> None:
    receiver.answers.append(HANG)
    key = _new_key(live, receiver.url)
    job = live.client.wait(
        live.client.submit_inspection(_photo(faces), origin=Origin(api_key_id=key.key.key_id)),
        120,
    )
    receiver.wait_for(1)
    live.worker.kill()  # SIGKILL, the POST in flight
    receiver.release.set()  # the held request is answered into a closed connection
    try:
        assert _events(live, job.job_id)[0][1:] == ("pending", 0)
    finally:
        live.restart_worker()
    event_id, _status, attempts = _wait_event_status(live, job.job_id, "delivered", 90)
    requests = receiver.wait_for(2)
    assert {r.webhook_id for r in requests} == {str(event_id)}
    for r in requests:
        _verify(key.webhook_secret, r)
    assert attempts == 1  # the killed attempt recorded nothing
    assert [(a, code) for a, code, *_ in _attempts(live, job.job_id)] == [(1, 200)]


def test_replay_sends_the_same_event_again(
    live: LiveStack, faces: Path, receiver: Receiver, cli: CliRunner
) -> None:
    key = _new_key(live, receiver.url)
    job = live.client.wait(
        live.client.submit_inspection(_photo(faces), origin=Origin(api_key_id=key.key.key_id)),
        120,
    )
    (first,) = receiver.wait_for(1)
    event_id, *_ = _wait_event_status(live, job.job_id, "delivered")

    result = cli.invoke(app, ["webhooks", "replay", str(job.job_id)])
    assert result.exit_code == 0, result.output
    assert "1 webhook event" in result.output
    second = receiver.wait_for(2)[1]
    assert first.webhook_id == second.webhook_id == str(event_id)
    assert first.body == second.body  # the same event, signed again
    _verify(key.webhook_secret, second)
    deadline = time.monotonic() + 30
    while _events(live, job.job_id)[0][1:] != ("delivered", 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _events(live, job.job_id)[0][1:] == ("delivered", 2)

    shown = cli.invoke(app, ["webhooks", "show", str(job.job_id), "--json"])
    assert shown.exit_code == 0, shown.output
    (event,) = json.loads(shown.output)["events"]
    assert event["event_id"] == str(event_id) and event["status"] == "delivered"
    assert [(a["attempt"], a["status_code"]) for a in event["attempts"]] == [(1, 200), (2, 200)]
    text = cli.invoke(app, ["webhooks", "show", str(job.job_id)])
    assert text.exit_code == 0 and str(event_id) in text.output

    missing = cli.invoke(app, ["webhooks", "replay", str(uuid4())])
    assert missing.exit_code == 1
