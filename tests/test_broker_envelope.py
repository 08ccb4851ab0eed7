"""Which queue items a worker hands to Celery, and which it drops as malformed."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.helpers_messages import encode, task_envelope
from workers.broker import EnvelopeError, check_envelope
from workers.job_runner import call_payload


def _mutated(change: Any) -> bytes:
    envelope = task_envelope("faceauth.enroll", kwargs={"payload": {"user_id": "a"}})
    change(envelope)
    return encode(envelope)


def test_a_valid_task_message_passes() -> None:
    envelope = task_envelope("faceauth.verify", kwargs={"payload": {"user_id": "a"}})
    assert check_envelope(encode(envelope)) == envelope


def test_wrong_arguments_still_reach_the_task() -> None:
    """The task's runner records invalid_payload for these, so they are not dropped here."""
    for args, kwargs in (([], {}), ([1, 2, 3], {}), ([], {"payload": 1, "extra": 2})):
        check_envelope(encode(task_envelope("faceauth.enroll", args, kwargs)))


def _set_body(envelope: dict[str, Any], body: bytes) -> None:
    envelope["body"] = base64.b64encode(body).decode()


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (b"not json", "not_json"),
        (b"", "not_json"),
        (b"\xff\xfe\x00garbage", "not_utf8"),
        (b"[1,2,3]", "not_an_envelope"),
        (b'"a string"', "not_an_envelope"),
        (b"42", "not_an_envelope"),
        (b"null", "not_an_envelope"),
        (b"{}", "not_an_envelope"),
        (b'{"properties": []}', "not_an_envelope"),
        (_mutated(lambda e: e["properties"].pop("delivery_tag")), "not_an_envelope"),
        (_mutated(lambda e: e["properties"].pop("delivery_info")), "not_an_envelope"),
        (_mutated(lambda e: e.pop("headers")), "not_a_task"),
        (_mutated(lambda e: e["headers"].pop("task")), "not_a_task"),
        (_mutated(lambda e: e["headers"].pop("id")), "not_a_task"),
        (_mutated(lambda e: e["headers"].update(task="os.system")), "unknown_task"),
        (_mutated(lambda e: e["headers"].update(task=["faceauth.enroll"])), "not_a_task"),
        (
            _mutated(lambda e: e.update({"content-type": "application/x-python-serialize"})),
            "content_type",
        ),
        (_mutated(lambda e: e.update({"content-type": "application/x-yaml"})), "content_type"),
        (_mutated(lambda e: e.update(body="%%% not base64")), "bad_body"),
        (_mutated(lambda e: e.update(body=None)), "bad_body"),
        (_mutated(lambda e: _set_body(e, b"not json")), "bad_body"),
        (_mutated(lambda e: _set_body(e, b'{"args": []}')), "bad_body"),
        (_mutated(lambda e: _set_body(e, b"[[], [], {}]")), "bad_body"),
        (_mutated(lambda e: e["properties"].update(body_encoding="rot13")), "bad_body"),
    ],
)
def test_malformed_items_are_refused_with_a_reason(item: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        check_envelope(item)
    assert caught.value.reason == reason


def test_utf8_bodies_without_base64_are_accepted() -> None:
    envelope = task_envelope("faceauth.enroll", kwargs={"payload": {}})
    envelope["properties"]["body_encoding"] = "utf-8"
    envelope["body"] = json.dumps([[], {"payload": {}}, {}])
    check_envelope(encode(envelope))


@pytest.mark.parametrize(
    ("args", "kwargs", "payload"),
    [
        ((), {"payload": {"a": 1}}, {"a": 1}),
        (({"a": 1},), {}, {"a": 1}),
        ((), {"payload": None}, None),
    ],
)
def test_a_task_call_with_one_payload_argument(
    args: tuple[Any, ...], kwargs: dict[str, Any], payload: Any
) -> None:
    assert call_payload(args, kwargs) == payload


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1, 2), {}), ((), {"payload": 1, "extra": 2}), ((1,), {"payload": 1})],
)
def test_any_other_call_shape_is_no_payload(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    marker = call_payload(args, kwargs)
    assert marker is not None and not isinstance(marker, dict)
