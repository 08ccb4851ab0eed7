"""The Redis transport of the workers, hardened against messages that are not task envelopes.

kombu's Redis channel parses every popped list item with ``json.loads`` in the
worker's main process and hands it to the consumer; an item that is not JSON, or
JSON that is not a kombu envelope (``LPUSH faceauth.inference '[1,2,3]'``), raises
out of the event loop and takes the whole worker down ("Unrecoverable error"). Here
each item is checked first: one that is not a valid envelope of one of our tasks is
moved to a capped dead-letter list (``FACEAUTH_DEAD_LETTER_KEY``) with one log
line and a counter, and the worker keeps serving. Envelopes of our tasks with wrong
arguments still reach the task, whose runner records ``invalid_payload``.

Only the consuming side changes; publishing is kombu's own. The worker app selects
this transport through ``broker_transport`` (workers/celery_app.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str

from shared.config import get_settings
from shared.schemas import INTERNAL_TASKS, SPEC_FOR_TASK

log = logging.getLogger(__name__)

KNOWN_TASKS = frozenset(SPEC_FOR_TASK) | frozenset(INTERNAL_TASKS)
_DEAD_LETTER_BYTES = 64 * 1024  # keep enough of a bad message to diagnose it, never more


class EnvelopeError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _require(condition: bool, reason: str, detail: str) -> None:
    if not condition:
        raise EnvelopeError(reason, detail)


def _body_parts(envelope: dict[str, Any]) -> Any:
    body = envelope.get("body")
    if not isinstance(body, str):
        raise EnvelopeError("bad_body", "body is not a string")
    encoding = envelope["properties"].get("body_encoding")
    raw: bytes | str = body
    if encoding == "base64":
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise EnvelopeError("bad_body", "body is not valid base64") from None
    else:
        _require(encoding in (None, "utf-8"), "bad_body", f"body encoding {encoding!r}")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise EnvelopeError("bad_body", "body is not JSON") from None


def check_envelope(item: bytes | str, known_tasks: frozenset[str] = KNOWN_TASKS) -> dict[str, Any]:
    """The decoded kombu envelope of a Celery protocol-2 JSON task message, or EnvelopeError."""
    try:
        text = item.decode("utf-8") if isinstance(item, bytes) else item
    except UnicodeDecodeError:
        raise EnvelopeError("not_utf8", "message is not UTF-8 text") from None
    try:
        envelope = json.loads(text)
    except ValueError:
        raise EnvelopeError("not_json", "message is not JSON") from None
    _require(isinstance(envelope, dict), "not_an_envelope", f"a JSON {type(envelope).__name__}")
    properties = envelope.get("properties")
    _require(isinstance(properties, dict), "not_an_envelope", "no properties object")
    _require(isinstance(properties.get("delivery_tag"), str), "not_an_envelope", "no delivery tag")
    _require(
        isinstance(properties.get("delivery_info"), dict), "not_an_envelope", "no delivery info"
    )
    headers = envelope.get("headers")
    _require(isinstance(headers, dict), "not_a_task", "no headers object")
    task = headers.get("task")
    _require(isinstance(task, str), "not_a_task", "no task header")
    _require(task in known_tasks, "unknown_task", f"task {str(task)[:100]!r}")
    _require(isinstance(headers.get("id"), str), "not_a_task", "no task id")
    content_type = envelope.get("content-type")
    _require(
        content_type == "application/json",
        "content_type",
        f"content type {str(content_type)[:100]!r} (only JSON is accepted)",
    )
    body = _body_parts(envelope)
    _require(
        isinstance(body, list)
        and len(body) == 3
        and isinstance(body[0], list)
        and isinstance(body[1], dict)
        and isinstance(body[2], dict | None),
        "bad_body",
        "body is not [args, kwargs, embed]",
    )
    return envelope


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, with every popped item checked before delivery."""

    def _brpop_read(self, **options: Any) -> bool:
        # kombu's own, except that the item goes through _checked() before _deliver().
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if dest__item:
                dest, item = dest__item
                dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
                self._queue_cycle.rotate(dest)
                envelope = self._checked(item, dest)
                if envelope is not None:
                    self.connection._deliver(envelope, dest)
                return True
            raise kombu_redis.Empty()
        finally:
            self._in_poll = None  # type: ignore[assignment]
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _get(self, queue: str, timeout: Any = None) -> Any:
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                item = client.rpop(self._q_for_pri(queue, pri))
                if item:
                    self._maybe_update_queues_expire(client, queue)
                    envelope = self._checked(item, queue)
                    if envelope is None:
                        raise kombu_redis.Empty()
                    return envelope
            self._maybe_update_queues_expire(client, queue)
            raise kombu_redis.Empty()

    def _checked(self, item: bytes | str, queue: str) -> dict[str, Any] | None:
        try:
            return check_envelope(item)
        except EnvelopeError as exc:
            self._dead_letter(item, queue, exc)
            return None

    def _dead_letter(self, item: bytes | str, queue: str, exc: EnvelopeError) -> None:
        settings = get_settings()
        raw = item if isinstance(item, bytes) else item.encode("utf-8", "replace")
        log.error(
            "dropped a message from %s that is not a valid task envelope (%s; %d bytes)"
            " to the dead-letter list %s",
            queue,
            exc,
            len(raw),
            settings.dead_letter_key,
        )
        from workers import metrics

        metrics.observe_dead_letter(exc.reason)
        if settings.dead_letter_max <= 0:
            return
        record = json.dumps(
            {
                "queue": queue,
                "reason": exc.reason,
                "detail": exc.detail,
                "n_bytes": len(raw),
                "message": raw[:_DEAD_LETTER_BYTES].decode("utf-8", "replace"),
            }
        )
        try:
            with self.conn_or_acquire() as client, client.pipeline() as pipe:
                pipe.lpush(settings.dead_letter_key, record)
                pipe.ltrim(settings.dead_letter_key, 0, settings.dead_letter_max - 1)
                pipe.execute()
        except self.connection_errors as err:  # the drop is logged; never fail the loop
            log.warning("could not write the dead letter: %s", type(err).__name__)


class Transport(kombu_redis.Transport):
    Channel = Channel
