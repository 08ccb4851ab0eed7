"""Bulk enrollment: stream a source, enqueue enrollment jobs with bounded in-flight work.

How a run stays safe to repeat, interrupt and resume:

- Each row's job carries an idempotency key derived from the user id and the
  image references, so a row submitted twice (a re-run, a crash between
  submitting and recording, two concurrent runs) gets the first job back, never a
  second enrollment.
- Before submitting, each chunk of rows is checked against Postgres in a few
  batched queries: users already enrolled with the current model version are
  skipped; a key whose job is still queued or running is waited for; a key
  whose job was rejected keeps that verdict; a key whose job failed for an
  infrastructure reason (or succeeded but the user is not enrolled any more, e.g.
  after a model upgrade) is retried under a new key chained from that job's id,
  so every run derives the same next key and the chain cannot fork.
- At most ``max_in_flight`` jobs are submitted and unfinished at any time
  (``InFlightWindow``); their status is read from Postgres in one query per poll.
  A million-row manifest therefore never puts more than that many messages in Redis.
- A job still ``queued`` long after it was sent (its message lost with a crashed
  producer or a flushed broker) is sent again by the workers' reconciler; the job
  runner makes duplicate deliveries of one job id harmless.

The rows come from ``source``, the keys from ``keys``, the bound from ``window``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pydantic import ValidationError
from tqdm import tqdm

from shared.backfill.keys import idempotency_key, upload_key
from shared.backfill.manifest import BadRow, ManifestRow, Row
from shared.backfill.outcomes import (
    ABORTED,
    TIMEOUT,
    BackfillSummary,
    OutcomeWriter,
    RowOutcome,
    RowStatus,
    is_retryable,
)
from shared.backfill.source import chunks, open_source
from shared.backfill.window import InFlightWindow
from shared.config import Settings, get_settings
from shared.db.jobs import JobState, jobs_by_key
from shared.db.pool import get_pool
from shared.db.templates import active_model_version, enrolled_users
from shared.db.users import erased_users
from shared.errors import ErrorCode, FaceauthError
from shared.producer import FaceauthClient, sniff_type
from shared.schemas import JobKind, JobStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackfillOptions:
    max_in_flight: int = 64
    chunk_size: int = 500
    liveness: bool = False  # back-office imports: the photos were not taken live
    model_version: str | None = None  # default: the active version in the database
    include_erased: bool = False  # re-enroll users erased on request (off: honour erasure)
    upload_threads: int = 4
    poll_interval_s: float = 0.2
    stall_timeout_s: float = 600.0  # stop when no job finished for this long
    max_consecutive_errors: int = 25
    max_images: int | None = None  # S3 prefix sources: images per user (default: settings)
    outcome_path: Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.chunk_size < 1 or self.upload_threads < 1:
            raise ValueError("max_in_flight, chunk_size and upload_threads must be positive")


def _image_reason_codes(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return []
    images = result.get("images") or (result.get("details") or {}).get("images") or []
    codes = {r.get("code") for img in images for r in img.get("reasons", [])}
    return sorted(str(c) for c in codes if c)


@dataclass
class _InFlight:
    row: ManifestRow
    new_job: bool  # submitted by this run (False: a job of an earlier run, waited for)


@dataclass
class _Progress:
    bar: Any
    last_postfix: float = 0.0
    last_activity: float = field(default_factory=time.monotonic)  # last submission or finish


class BackfillRunner:
    def __init__(
        self,
        settings: Settings | None = None,
        options: BackfillOptions | None = None,
        client: FaceauthClient | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.options = options or BackfillOptions()
        self.client = client or FaceauthClient(self.settings)
        self.summary = BackfillSummary()
        self._in_flight: InFlightWindow[_InFlight] = InFlightWindow(
            self.settings, self.options.max_in_flight
        )
        self._model_version = self.options.model_version
        self._consecutive_errors = 0
        self._abort_code = ABORTED
        self._writer = OutcomeWriter(None)
        self._progress = _Progress(bar=None)

    # --- entry point --------------------------------------------------------------------------
    def run(
        self, rows: Iterable[Row], *, total: int | None = None, outcome_path: Path | None = None
    ) -> BackfillSummary:
        started = time.perf_counter()
        self.summary.outcome_file = str(outcome_path) if outcome_path else None
        bar = tqdm(
            total=total,
            unit="row",
            disable=not self.options.progress,
            mininterval=0.5,
            smoothing=0.05,
            dynamic_ncols=True,
        )
        try:
            with (
                OutcomeWriter(outcome_path) as writer,
                ThreadPoolExecutor(self.options.upload_threads, "backfill-upload") as pool,
            ):
                self._writer, self._progress = writer, _Progress(bar=bar)
                for chunk in chunks(rows, self.options.chunk_size):
                    self._process_chunk(chunk, pool)
                    writer.flush()
                    if self.summary.aborted:
                        break
                self._drain()
        finally:
            bar.close()
            self.summary.seconds = time.perf_counter() - started
        return self.summary

    # --- recording ----------------------------------------------------------------------------
    def _record(self, outcome: RowOutcome) -> None:
        self.summary.add(outcome)
        self._writer.write(outcome)
        progress = self._progress
        if progress.bar is not None:
            progress.bar.update(1)
            now = time.monotonic()
            if now - progress.last_postfix > 0.5:
                progress.last_postfix = now
                s = self.summary
                progress.bar.set_postfix(
                    enrolled=s.enrolled,
                    skipped=s.skipped,
                    rejected=sum(s.rejected.values()),
                    failed=sum(s.failed.values()),
                    in_flight=len(self._in_flight),
                    refresh=False,
                )

    def _bad(self, row: BadRow) -> None:
        self._record(
            RowOutcome(
                row.line, row.user_id, RowStatus.REJECTED, code=str(row.code), message=row.message
            )
        )

    def _reject(self, row: ManifestRow, code: ErrorCode, message: str) -> None:
        self._record(
            RowOutcome(row.line, row.user_id, RowStatus.REJECTED, code=str(code), message=message)
        )

    def _finished(self, row: ManifestRow, job: JobState, *, new_job: bool) -> None:
        result = job.result or {}
        outcome = RowOutcome(row.line, row.user_id, RowStatus.ENROLLED, job_id=str(job.job_id))
        outcome.new_job = new_job
        if job.status is JobStatus.SUCCEEDED:
            outcome.duplicate_of = list(result.get("duplicate_of") or [])
            outcome.model_version = result.get("model_version")
        else:
            retry = is_retryable(job.error_code)
            outcome.status = RowStatus.FAILED if retry else RowStatus.REJECTED
            outcome.code = job.error_code or str(ErrorCode.INTERNAL)
            outcome.message = job.error_message
            outcome.reasons = _image_reason_codes(result)
        self._record(outcome)

    # --- one chunk ----------------------------------------------------------------------------
    def _process_chunk(self, chunk: list[Row], pool: ThreadPoolExecutor) -> None:
        settings = self.settings
        rows: list[ManifestRow] = []
        for row in chunk:
            if isinstance(row, BadRow):
                self._bad(row)
            elif len(row.images) > settings.enroll_max_images:
                self._reject(
                    row,
                    ErrorCode.TOO_MANY_IMAGES,
                    f"{len(row.images)} images; at most {settings.enroll_max_images}",
                )
            elif len(row.images) < settings.enroll_min_images:
                self._reject(
                    row,
                    ErrorCode.TOO_FEW_IMAGES,
                    f"{len(row.images)} images; at least {settings.enroll_min_images}",
                )
            else:
                rows.append(row)
        if not rows:
            return
        with get_pool(settings).connection() as conn:
            if self._model_version is None:
                self._model_version = active_model_version(conn)
            users = [r.user_id for r in rows]
            enrolled = enrolled_users(conn, users, self._model_version)
            erased = set() if self.options.include_erased else erased_users(conn, users)
            todo: list[ManifestRow] = []
            for row in rows:
                if row.user_id in enrolled:
                    self._record(
                        RowOutcome(
                            row.line,
                            row.user_id,
                            RowStatus.SKIPPED,
                            message="already enrolled with the current model version",
                            model_version=self._model_version,
                        )
                    )
                elif row.user_id in erased:
                    message = "the user was erased on request; not re-enrolled"
                    self._reject(row, ErrorCode.USER_DELETED, message)
                else:
                    todo.append(row)
            to_submit = self._resolve_keys(conn, todo)
        self._submit_all(to_submit, pool)

    def _resolve_keys(
        self, conn: psycopg.Connection, rows: list[ManifestRow]
    ) -> list[tuple[ManifestRow, str]]:
        """Follow each row's key chain to its live job, its verdict, or a free key to submit."""
        pending = {idempotency_key(r.user_id, r.refs): r for r in rows}
        to_submit: list[tuple[ManifestRow, str]] = []
        while pending:
            found = jobs_by_key(conn, list(pending))
            chained: dict[str, ManifestRow] = {}
            succeeded: list[tuple[ManifestRow, JobState]] = []
            for key, row in pending.items():
                job = found.get(key)
                if job is None:
                    to_submit.append((row, key))
                elif not job.status.finished:
                    self._attach(row, job)
                elif job.status is JobStatus.SUCCEEDED:
                    succeeded.append((row, job))
                elif is_retryable(job.error_code):
                    chained[idempotency_key(row.user_id, row.refs, job.job_id)] = row
                else:
                    self._finished(row, job, new_job=False)
            if succeeded:
                # The job may have finished after this chunk's enrollment check: look again.
                if self._model_version is None:
                    self._model_version = active_model_version(conn)
                now_enrolled = enrolled_users(
                    conn, [row.user_id for row, _ in succeeded], self._model_version
                )
                for row, job in succeeded:
                    if row.user_id in now_enrolled:
                        self._finished(row, job, new_job=False)
                    else:  # enrolled once, but not with the current model (or not any more)
                        chained[idempotency_key(row.user_id, row.refs, job.job_id)] = row
            pending = chained
        return to_submit

    def _attach(self, row: ManifestRow, job: JobState) -> None:
        self.summary.reused_jobs += 1
        self._in_flight.add(job.job_id, _InFlight(row, False))

    # --- submission ---------------------------------------------------------------------------
    def _submit_all(self, rows: list[tuple[ManifestRow, str]], pool: ThreadPoolExecutor) -> None:
        # Uploads run ahead of submission in a bounded window so a slow S3 PUT does not
        # stall the queue, while no more than ``max_in_flight`` rows sit uploaded but unsent.
        window: deque[tuple[ManifestRow, str, Future[tuple[list[str], int]]]] = deque()
        lookahead = max(self.options.max_in_flight, self.options.upload_threads)
        for row, key in rows:
            if self.summary.aborted:
                break
            window.append((row, key, pool.submit(self._prepare, row)))
            if len(window) >= lookahead:
                self._submit(*window.popleft())
        while window and not self.summary.aborted:
            self._submit(*window.popleft())
        for _row, _key, future in window:  # aborted: leave these rows to the next run
            future.cancel()

    def _prepare(self, row: ManifestRow) -> tuple[list[str], int]:
        """Object keys of the row's images, uploading local files (content-addressed keys)."""
        keys: list[str] = []
        uploaded = 0
        for ref in row.images:
            if ref.kind == "key":
                keys.append(ref.value)
                continue
            path = Path(ref.value)
            size = path.stat().st_size
            if size > self.settings.max_image_bytes:
                raise FaceauthError(
                    ErrorCode.IMAGE_TOO_LARGE,
                    f"{path.name} is {size} bytes; the limit is {self.settings.max_image_bytes}",
                )
            data = path.read_bytes()
            ext, mime = sniff_type(data)
            key = upload_key(row.user_id, data, ext)
            self.client.store.put(key, data, content_type=mime)
            keys.append(key)
            uploaded += 1
        return keys, uploaded

    def _submit(self, row: ManifestRow, key: str, prepared: Future[tuple[list[str], int]]) -> None:
        self._wait_for_capacity()
        if self.summary.aborted:
            return
        try:
            image_keys, uploaded = prepared.result()
        except FaceauthError as exc:
            status = RowStatus.FAILED if exc.transient else RowStatus.REJECTED
            self._record(RowOutcome(row.line, row.user_id, status, str(exc.code), exc.message))
            self._infrastructure_error(exc.transient, exc.message)
            return
        except OSError as exc:
            self._reject(row, ErrorCode.IMAGE_NOT_FOUND, f"cannot read a local image ({exc})")
            return
        self.summary.uploaded_images += uploaded
        payload = {
            "user_id": row.user_id,
            "image_keys": image_keys,
            "liveness": self.options.liveness,
        }
        try:
            job_id = self.client.submit(JobKind.ENROLL, payload, idempotency_key=key)
        except ValidationError as exc:
            self._reject(row, ErrorCode.INVALID_PAYLOAD, f"invalid enrollment request: {exc}")
            return
        except psycopg.Error as exc:
            self._submit_failed(row, ErrorCode.DATABASE_UNAVAILABLE, exc)
            return
        except Exception as exc:  # the producer has marked the job broker_unavailable
            self._submit_failed(row, ErrorCode.BROKER_UNAVAILABLE, exc)
            return
        self._consecutive_errors = 0
        self.summary.new_jobs += 1
        self._in_flight.add(job_id, _InFlight(row, True))
        self._progress.last_activity = time.monotonic()

    def _submit_failed(self, row: ManifestRow, code: ErrorCode, exc: Exception) -> None:
        message = f"could not submit ({type(exc).__name__})"
        self._record(RowOutcome(row.line, row.user_id, RowStatus.FAILED, str(code), message))
        self._infrastructure_error(True, message)

    def _infrastructure_error(self, transient: bool, message: str) -> None:
        if not transient:
            return
        self._consecutive_errors += 1
        if self._consecutive_errors >= self.options.max_consecutive_errors:
            self._abort(f"{self._consecutive_errors} infrastructure errors in a row ({message})")

    def _abort(self, reason: str, code: str = ABORTED) -> None:
        log.error("backfill stopped: %s", reason)
        self.summary.aborted = reason
        self._abort_code = code

    # --- waiting ------------------------------------------------------------------------------
    def _wait_for_capacity(self) -> None:
        while not self._in_flight.has_room and not self.summary.aborted:
            if not self._poll():
                time.sleep(self.options.poll_interval_s)

    def _drain(self) -> None:
        while self._in_flight and not self.summary.aborted:
            if not self._poll():
                time.sleep(self.options.poll_interval_s)
        for flight in self._in_flight.clear():  # aborted: the jobs go on; the next run waits
            row = flight.row
            message = "still running when the backfill stopped; the next run picks it up"
            self._record(
                RowOutcome(row.line, row.user_id, RowStatus.FAILED, self._abort_code, message)
            )

    def _poll(self) -> bool:
        """Read the status of every in-flight job (one query); True when any finished."""
        if not self._in_flight:
            return False
        finished = self._in_flight.collect()
        for flight, state in finished:
            self._finished(flight.row, state, new_job=flight.new_job)
        now = time.monotonic()
        if finished:
            self._progress.last_activity = now
        elif now - self._progress.last_activity > self.options.stall_timeout_s:
            self._abort(f"no job finished for {self.options.stall_timeout_s:.0f}s", TIMEOUT)
        return bool(finished)


def run_backfill(
    source: str, options: BackfillOptions | None = None, settings: Settings | None = None
) -> BackfillSummary:
    settings = settings or get_settings()
    options = options or BackfillOptions()
    opened = open_source(source, settings, max_images=options.max_images)
    outcome_path = options.outcome_path or opened.default_outcome_path
    runner = BackfillRunner(settings, options)
    return runner.run(opened.rows, total=opened.total, outcome_path=outcome_path)
