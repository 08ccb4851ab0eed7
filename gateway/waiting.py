"""``?wait``: answer with the outcome when the job finishes in time.

Outcomes are read from Postgres, the durable record, by short reads in the threadpool;
between reads the request only awaits (an ``asyncio.Event`` or a sleep), so a waiting
request holds neither a database connection nor a thread, and thousands can wait at once.

When the job's task state is published (``wakeup``), the request reads at once. Reads also
come on a schedule, as a safety net for lost hints: backing off by 1.5x from 20 ms to one
read per 250 ms. Without hints (Redis unreachable) the first half second is read every
20 ms, because a verification takes ~100-200 ms and a coarser poll would add its
granularity to every answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

from shared.schemas import JobView

FAST_POLL_S = 0.02
FAST_PHASE_S = 0.5
MAX_POLL_S = 0.25
GROWTH = 1.5


def poll_delays(*, fast_phase_s: float = FAST_PHASE_S) -> Iterator[float]:
    """The pause before each next read: 20 ms for ``fast_phase_s``, then x1.5 up to 250 ms."""
    elapsed = 0.0
    while elapsed < fast_phase_s:
        yield FAST_POLL_S
        elapsed += FAST_POLL_S
    delay = FAST_POLL_S
    while True:
        delay = min(delay * GROWTH, MAX_POLL_S)
        yield delay


async def wait_for_outcome(
    read: Callable[[], Awaitable[JobView | None]],
    timeout_s: float,
    *,
    gone: Callable[[], Awaitable[bool]] | None = None,
    woken: asyncio.Event | None = None,
) -> JobView | None:
    """Read until the job finished, ``timeout_s`` passed or the client is ``gone``; return
    the last state read (None: no such job). ``woken`` (set by a hint) cuts a pause short."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    job = await read()
    delays = poll_delays(fast_phase_s=0.0 if woken is not None else FAST_PHASE_S)
    for delay in delays:
        if job is None or job.status.finished:
            return job
        remaining = deadline - loop.time()
        if remaining <= 0 or (gone is not None and await gone()):
            return job
        pause = min(delay, remaining)
        if woken is None:
            await asyncio.sleep(pause)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=pause)
            woken.clear()
        job = await read()
    raise AssertionError("poll_delays never ends")  # pragma: no cover
