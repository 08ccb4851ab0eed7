"""A corpus of bad input, each kind ending in its own code with nothing else stored.

Three layers are tried the way a buggy or hostile producer could: image bytes
behind a valid enrollment (decoder limits and errors), task payloads sent by name
past every client-side check, and queue items that are not task envelopes at all.
After each batch the worker that served it is still the same process, no user,
template, enrollment, audit entry or model version appeared, and the next job runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import redis

from tests.bad_images import bad_image_corpus
from tests.helpers_messages import encode, task_envelope

from .conftest import LiveStack

pytestmark = pytest.mark.integration

_LONG = "x" * 600
_PICKLE = "application/x-python-serialize"


def _wait_codes(live: LiveStack, job_ids: dict[str, UUID], timeout: float = 120) -> dict[str, Any]:
    """Kind -> (status, error code) once every job has finished."""
    ids = list(job_ids.values())
    deadline = time.monotonic() + timeout
    while True:
        rows = live.sql(
            "SELECT job_id, status, error_code FROM jobs WHERE job_id = ANY(%s)"
            " AND status IN ('succeeded', 'failed')",
            ids,
        )
        if len(rows) == len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    by_id = {r[0]: (r[1], r[2]) for r in rows}
    return {kind: by_id.get(job_id, ("unfinished", None)) for kind, job_id in job_ids.items()}


def _assert_nothing_stored_and_worker_serves(
    live: LiveStack, faces: Path, counts: dict[str, int], pid: int
) -> None:
    assert live.table_counts() == counts
    assert live.worker.is_alive() and live.worker.pid == pid
    photo = sorted((faces / "identities" / "obama").iterdir())[0].read_bytes()
    job = live.client.wait(live.client.submit_inspection(photo), timeout=60)
    assert job.status == "succeeded"


def test_bad_images_end_in_their_codes(live: LiveStack, faces: Path) -> None:
    sample = sorted((faces / "identities" / "biden").iterdir())[0].read_bytes()
    corpus = bad_image_corpus(sample)
    oversize = b"\xff\xd8\xff" + bytes(live.settings.max_image_bytes)
    missing = f"enroll/nobody-{uuid4().hex}/missing.jpg"
    counts = live.table_counts()
    pid = live.worker.pid
    expected: dict[str, str] = {}
    job_ids: dict[str, UUID] = {}
    cases: list[tuple[str, bytes | str, str]] = [
        *corpus,
        ("larger than the byte limit", oversize, "image_too_large"),
        ("object missing from the bucket", missing, "image_not_found"),
    ]
    for kind, data, code in cases:
        user = f"badimg-{uuid4().hex[:8]}"
        job_ids[kind] = live.client.submit_enrollment(user, [data], liveness=False)
        expected[kind] = code
    outcomes = _wait_codes(live, job_ids)
    wrong = {k: v for k, v in outcomes.items() if v != ("failed", expected[k])}
    assert not wrong, {k: (v, expected[k]) for k, v in wrong.items()}
    assert len(cases) >= 35
    _assert_nothing_stored_and_worker_serves(live, faces, counts, pid)


def _payload_cases(live: LiveStack) -> list[tuple[str, str, list[Any], dict[str, Any], str]]:
    """(kind, task, args, kwargs, expected code)."""
    key = f"probes/{uuid4().hex}.jpg"
    enroll, verify = "faceauth.enroll", "faceauth.verify"
    ok_enroll = {"user_id": "u1", "image_keys": [key]}

    def enr(**change: Any) -> dict[str, Any]:
        return {"payload": {**ok_enroll, **change}}

    def pay(payload: Any) -> dict[str, Any]:
        return {"payload": payload}

    invalid: list[tuple[str, str, list[Any], dict[str, Any]]] = [
        ("no arguments", enroll, [], {}),
        ("an extra keyword argument", enroll, [], {**enr(), "x": 1}),
        ("two positional arguments", enroll, [ok_enroll, 1], {}),
        ("payload is a list", enroll, [], pay([1, 2])),
        ("payload is a string", enroll, [], pay("alice")),
        ("payload is null", enroll, [], pay(None)),
        ("payload is a number", enroll, [], pay(7)),
        ("empty user id", enroll, [], enr(user_id="")),
        ("user id with spaces", enroll, [], enr(user_id="a b")),
        ("user id too long", enroll, [], enr(user_id=_LONG)),
        ("user id is an object", enroll, [], enr(user_id={"$ne": 1})),
        ("image keys is a string", enroll, [], enr(image_keys=key)),
        ("image key with ..", enroll, [], enr(image_keys=["a/../b"])),
        ("image key absolute", enroll, [], enr(image_keys=["/etc/x"])),
        ("image key too long", enroll, [], enr(image_keys=[_LONG])),
        ("unknown field", enroll, [], enr(admin=True)),
        ("liveness not a bool", enroll, [], enr(liveness="maybe")),
        ("job id not a uuid", enroll, [], enr(job_id="1")),
        ("empty idempotency key", enroll, [], enr(idempotency_key="")),
        ("idempotency key too long", enroll, [], enr(idempotency_key=_LONG)),
        ("verify without image", verify, [], pay({"user_id": "u1"})),
        ("identify top_k 0", "faceauth.identify", [], pay({"image_key": key, "top_k": 0})),
        ("identify top_k 1000", "faceauth.identify", [], pay({"image_key": key, "top_k": 1000})),
        ("delete without user", "faceauth.delete_user", [], pay({})),
        ("quality scan of nothing", "faceauth.quality_scan", [], pay({"image_keys": []})),
        ("retention negative age", "faceauth.apply_retention", [], pay({"older_than_days": -1})),
        ("calibrate version too long", "faceauth.calibrate", [], pay({"model_version": _LONG})),
    ]
    ghost = f"ghost-{uuid4().hex[:6]}"
    coded: list[tuple[str, str, list[Any], dict[str, Any], str]] = [
        ("enroll no images", enroll, [], enr(image_keys=[]), "too_few_images"),
        ("enroll four images", enroll, [], enr(image_keys=[key] * 4), "too_many_images"),
        ("verify an unknown user", verify, [], pay({"user_id": ghost, "image_key": key}),
         "unknown_user"),
    ]  # fmt: skip
    return [(*case, "invalid_payload") for case in invalid] + coded


def test_bad_payloads_end_in_their_codes(live: LiveStack, faces: Path) -> None:
    counts = live.table_counts()
    pid = live.worker.pid
    cases = _payload_cases(live)
    job_ids: dict[str, UUID] = {}
    for kind, task, args, kwargs, _code in cases:
        job_ids[kind] = uuid4()
        live.client.celery.send_task(task, args=args, kwargs=kwargs, task_id=str(job_ids[kind]))
    outcomes = _wait_codes(live, job_ids)
    expected = {kind: ("failed", code) for kind, _t, _a, _k, code in cases}
    wrong = {k: (v, expected[k]) for k, v in outcomes.items() if v != expected[k]}
    assert not wrong, wrong
    # A bad payload is stored by shape only, never by content.
    stored = live.sql(
        "SELECT payload FROM jobs WHERE job_id = ANY(%s) AND error_code = 'invalid_payload'",
        list(job_ids.values()),
    )
    assert stored and all(p == ({"invalid": True},) for p in stored)
    _assert_nothing_stored_and_worker_serves(live, faces, counts, pid)


def _queue_items() -> list[tuple[str, bytes, str]]:
    """(kind, raw queue item, dead-letter reason)."""
    enroll = task_envelope("faceauth.enroll", kwargs={"payload": {}})

    def changed(**fields: Any) -> bytes:
        envelope = json.loads(encode(enroll))
        for path, value in fields.items():
            target = envelope
            *parents, last = path.split("__")
            for part in parents:
                target = target[part]
            target[last.replace("_", "-") if last == "content_type" else last] = value
        return encode(envelope)

    return [
        ("plain text", b"not json", "not_json"),
        ("empty item", b"", "not_json"),
        ("binary garbage", bytes(range(256)), "not_utf8"),
        ("a JSON list", b"[1,2,3]", "not_an_envelope"),
        ("a JSON string", b'"faceauth.enroll"', "not_an_envelope"),
        ("an object without properties", b'{"body": "e30="}', "not_an_envelope"),
        ("no task header", changed(headers={}), "not_a_task"),
        ("unknown task", encode(task_envelope("celery.backend_cleanup")), "unknown_task"),
        ("pickle content type", changed(content_type=_PICKLE), "content_type"),
        ("body not base64", changed(body="***"), "bad_body"),
        ("body not a task call", changed(body="W10="), "bad_body"),  # base64 of "[]"
    ]  # fmt: skip


def test_queue_items_that_are_not_tasks_are_dead_lettered(live: LiveStack, faces: Path) -> None:
    client = redis.Redis.from_url(live.settings.broker_url)
    counts = live.table_counts()
    pid = live.worker.pid
    key = live.settings.dead_letter_key
    client.delete(key)
    items = _queue_items()
    for _kind, item, _reason in items:
        client.lpush(live.settings.queue_inference, item)
    deadline = time.monotonic() + 60
    while client.llen(key) < len(items) and time.monotonic() < deadline:
        time.sleep(0.1)
    letters = [json.loads(x) for x in reversed(client.lrange(key, 0, -1))]
    assert [letter["reason"] for letter in letters] == [reason for _k, _i, reason in items]
    _assert_nothing_stored_and_worker_serves(live, faces, counts, pid)
