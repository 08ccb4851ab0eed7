"""Wake-up hints for ``?wait``: the result backend announces each finished task.

Celery's Redis result backend PUBLISHes every stored task state on the channel
``celery-task-meta-<task id>`` (the task id is the job id), after the worker committed the
job's outcome to Postgres. One connection per gateway process pattern-subscribes to those
channels and wakes the requests waiting for that job, which then read the outcome from
Postgres, the durable record: the message is only a hint, its content is never used.

Hints make a waiting request answer within milliseconds of the outcome instead of at its
next poll, and let the polls be sparse. They are best effort: when Redis is unreachable
(or a message is lost), waiting falls back to polling alone (``waiting``), and the
listener reconnects with backoff. The cost is that every gateway process receives every
task's state message (a few hundred bytes to a few KiB each).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator
from uuid import UUID

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "celery-task-meta-"  # celery.backends.base.KeyValueStoreBackend.task_keyprefix
_BACKOFF_MIN_S = 0.5
_BACKOFF_MAX_S = 30.0


class OutcomeWakeups:
    """Per-process listener: ``watch(job_id)`` gives an event set when the job's task
    state is published. Start with ``start()`` in the app's lifespan, ``stop()`` after."""

    def __init__(self, result_backend_url: str) -> None:
        self._url = result_backend_url
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    @property
    def enabled(self) -> bool:
        return self._url.startswith(("redis://", "rediss://", "unix://"))

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextlib.contextmanager
    def watch(self, job_id: UUID) -> Iterator[asyncio.Event]:
        """An event set whenever a state of ``job_id`` is published, while in the block.

        Register before the first read of the job, so an outcome that lands between the
        read and the wait still wakes it."""
        key = str(job_id)
        event = asyncio.Event()
        self._events[key].add(event)
        try:
            yield event
        finally:
            waiters = self._events.get(key)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._events[key]

    def _wake(self, channel: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        for event in self._events.get(name.removeprefix(CHANNEL_PREFIX), ()):
            event.set()

    async def _listen(self) -> None:
        backoff = _BACKOFF_MIN_S
        while True:
            client = aioredis.from_url(
                self._url, socket_connect_timeout=2.0, health_check_interval=30
            )
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.psubscribe(f"{CHANNEL_PREFIX}*")
                    self.connected = True
                    backoff = _BACKOFF_MIN_S
                    async for message in pubsub.listen():
                        if message.get("type") == "pmessage":
                            self._wake(message["channel"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: waiters poll; try again later
                if self.connected:
                    log.warning("outcome wake-ups lost (%s); polling only", type(exc).__name__)
                self.connected = False
            finally:
                self.connected = False
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)
