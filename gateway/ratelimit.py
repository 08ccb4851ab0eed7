"""Rate limits: requests per API key (Redis, through ``limits``) and failed
verifications per user_id (counted in Postgres).

Per key: a moving window of ``FACEAUTH_GATEWAY_RATE_LIMIT`` in Redis (the broker), shared
by every gateway process. When Redis cannot be reached, a submission is refused with 503
right here, before anything is uploaded or written (its message could not be sent
anyway, and a job row failed with ``broker_unavailable`` would hold its Idempotency-Key),
while reads, which need only Postgres, go through without the limit (a warning is
logged once per outage).

Per user_id: ``FACEAUTH_GATEWAY_VERIFY_FAILURES_LIMIT`` failed verifications in its window
refuse further verifications of that user with 429, so nobody grinds a threshold with
photo after photo. "Failed" means the decision was ``reject`` (not the same person) or
``liveness_failed`` (presentation attack suspected); ``quality_failed`` is a bad photo, not
an attack, and ``step_up`` hands over to another factor. The count comes from the job
rows, the durable record: outcomes nobody waited for, and those submitted by other
producers, count too. Verifications still in flight are not counted until they finish.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from starlette.concurrency import run_in_threadpool

from gateway.problems import Problem, unavailable
from shared.config import Settings
from shared.db import jobs as job_repo
from shared.db.pool import get_pool
from shared.errors import ErrorCode

log = logging.getLogger(__name__)

FAILED_DECISIONS = ("reject", "liveness_failed")
_NAMESPACE = "faceauth-gateway-key"
_REDIS_TIMEOUT_S = 1.0
_WARN_EVERY_S = 30.0


def _retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


class KeyRateLimiter:
    """Requests per API key in a moving window, counted in Redis."""

    def __init__(self, settings: Settings) -> None:
        self.item: RateLimitItem = parse(settings.gateway_rate_limit)
        storage = RedisStorage(
            "async+" + settings.broker_url,
            wrap_exceptions=True,
            implementation="redispy",
            socket_timeout=_REDIS_TIMEOUT_S,
            socket_connect_timeout=_REDIS_TIMEOUT_S,
        )
        self._limiter = MovingWindowRateLimiter(storage)
        self._warned_at = -math.inf

    async def check(self, key_id: str, *, submits: bool) -> None:
        try:
            if await self._limiter.hit(self.item, _NAMESPACE, key_id):
                return
            stats = await self._limiter.get_window_stats(self.item, _NAMESPACE, key_id)
        except StorageError as exc:
            if submits:
                raise unavailable(ErrorCode.BROKER_UNAVAILABLE, "the message broker") from None
            now = time.monotonic()
            if now - self._warned_at > _WARN_EVERY_S:  # one line per outage, not per request
                log.warning("rate limit not applied: Redis unreachable (%s)", type(exc).__name__)
                self._warned_at = now
            return
        raise Problem(
            ErrorCode.RATE_LIMITED,
            f"this API key may send {self.item.amount} request(s) per {self.item.get_expiry()} s",
            headers={"Retry-After": _retry_after(stats.reset_time - time.time())},
        )


class VerificationFailureLimit:
    """Failed verifications per user_id, counted from the job rows."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.item: RateLimitItem = parse(settings.gateway_verify_failures_limit)

    def _count(self, user_id: str) -> tuple[int, float]:
        with get_pool(self.settings).connection() as conn:
            return job_repo.recent_verification_failures(
                conn,
                user_id,
                decisions=FAILED_DECISIONS,
                window_s=float(self.item.get_expiry()),
                limit=self.item.amount,
            )

    async def check(self, user_id: str) -> None:
        count, expires_in = await run_in_threadpool(self._count, user_id)
        if count < self.item.amount:
            return
        raise Problem(
            ErrorCode.TOO_MANY_FAILED_VERIFICATIONS,
            f"{count} failed verifications of this user in the last"
            f" {self.item.get_expiry()} s; try again later or use another factor",
            headers={"Retry-After": _retry_after(expires_in)},
        )
