"""A dynamic batcher: model calls of the jobs in flight in one process merged into one run.

With the threads pool (``celery worker --pool threads --concurrency N``) one worker
process runs N jobs at once. Each job prepares its own inputs (fetch, decode, detect,
align, crop) in its own thread, overlapping with the others, and hands the model call
here. A background thread takes the first waiting call, waits at most ``max_wait_s``
for more, and runs up to ``max_batch`` items in one model run; each caller gets back
exactly its own rows. With ``max_batch`` 1 the call runs directly in the caller.

Why not ``celery-batches``: it groups whole *messages* into one task call, so one
failure, retry or time limit would apply to every job of the batch, and each job could
no longer commit its own transaction and be acknowledged on its own. Batching only the
model call keeps the job runner's one-job-one-outcome contract untouched.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Call(Generic[T, R]):
    items: Sequence[T]
    done: threading.Event = field(default_factory=threading.Event)
    results: list[R] | None = None
    error: BaseException | None = None


class MicroBatcher(Generic[T, R]):
    """Merge concurrent ``__call__``s into runs of ``run`` with at most ``max_batch`` items."""

    def __init__(
        self,
        name: str,
        run: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int,
        max_wait_s: float,
        observe: Callable[[str, int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.name = name
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._observe = observe
        self._calls: queue.Queue[_Call[T, R]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __call__(self, items: Sequence[T]) -> list[R]:
        if not items:
            return []
        if self.max_batch == 1:
            return self._run_and_observe(list(items))
        self._ensure_thread()
        call: _Call[T, R] = _Call(items)
        self._calls.put(call)
        call.done.wait()
        if call.error is not None:
            raise call.error
        assert call.results is not None
        return call.results

    def _ensure_thread(self) -> None:
        # Started on first use, in the process that uses it (never before a fork).
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name=f"batcher-{self.name}", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        while True:
            calls = self._gather()
            try:
                flat = [item for call in calls for item in call.items]
                results: list[R] = []
                for start in range(0, len(flat), self.max_batch):
                    results.extend(self._run_and_observe(flat[start : start + self.max_batch]))
                if len(results) != len(flat):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(flat)} items")
                offset = 0
                for call in calls:
                    call.results = results[offset : offset + len(call.items)]
                    offset += len(call.items)
            except BaseException as exc:  # every caller of this run gets the error
                for call in calls:
                    call.error = exc
            finally:
                for call in calls:
                    call.done.set()

    def _gather(self) -> list[_Call[T, R]]:
        """The first waiting call, then whatever arrives within ``max_wait_s`` (up to a batch)."""
        first = self._calls.get()
        calls = [first]
        size = len(first.items)
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                call = (
                    self._calls.get(timeout=remaining)
                    if remaining > 0
                    else self._calls.get_nowait()
                )
            except queue.Empty:
                break
            calls.append(call)
            size += len(call.items)
        return calls

    def _run_and_observe(self, items: list[T]) -> list[R]:
        if self._observe is not None:
            self._observe(self.name, len(items))
        return list(self._run(items))


def batcher_for(
    name: str, run: Callable[[list[Any]], Sequence[Any]], settings: Any
) -> MicroBatcher[Any, Any]:
    """A batcher sized by FACEAUTH_BATCH_MAX_SIZE / FACEAUTH_BATCH_MAX_WAIT_MS."""
    from workers import metrics

    return MicroBatcher(
        name,
        run,
        max_batch=settings.batch_max_size,
        max_wait_s=settings.batch_max_wait_ms / 1000.0,
        observe=metrics.observe_batch,
    )
