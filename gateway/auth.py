"""API keys: who is calling, and may they call this route.

A key is sent as ``Authorization: Bearer fa_<id>_<secret>`` or ``X-API-Key: fa_...``; for
browsers (``/docs``) also as basic auth with the token as password. Every request looks
the key up in Postgres (``shared.db.api_keys.authenticate``: SHA-256 compared in constant
time, revoked keys refused): nothing is cached, so a revocation takes effect on the next
request. The lookup runs in the threadpool with a short pool timeout, so a database
outage answers 503 within seconds instead of holding the request for the pool's 15 s.

Scopes: ``enroll``, ``verify``, ``identify``; ``admin`` is every scope plus erasure,
quality scans, user reads, other keys' jobs, raw liveness scores and ``/metrics``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from gateway.problems import Problem
from gateway.state import gateway_state
from shared.config import Settings
from shared.db import api_keys
from shared.db.api_keys import ApiKey, Scope
from shared.db.pool import get_pool
from shared.errors import ErrorCode

# The key lookup waits this long for a pooled connection before answering 503.
AUTH_DB_TIMEOUT_S = 3.0
BEARER_CHALLENGE = 'Bearer realm="faceauth"'
BASIC_CHALLENGE = 'Basic realm="faceauth gateway", charset="UTF-8"'


@dataclass(frozen=True)
class Caller:
    key: ApiKey

    @property
    def key_id(self) -> str:
        return self.key.key_id

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.key.scopes


def presented_token(request: Request) -> str | None:
    """The API key token of the request, from whichever header carries it."""
    header = request.headers.get("x-api-key")
    if header:
        return header.strip()
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and credentials.strip():
        return credentials.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, _, password = decoded.partition(":")
        return password or None
    return None


def _lookup(settings: Settings, token: str) -> ApiKey | None:
    with get_pool(settings).connection(timeout=AUTH_DB_TIMEOUT_S) as conn:
        return api_keys.authenticate(conn, token)


async def authenticate(request: Request, *, challenge: str = BEARER_CHALLENGE) -> Caller:
    token = presented_token(request)
    headers = {"WWW-Authenticate": challenge}
    if token is None:
        raise Problem(
            ErrorCode.UNAUTHENTICATED,
            "send an API key: Authorization: Bearer fa_<id>_<secret> (or X-API-Key)",
            headers=headers,
        )
    key = await run_in_threadpool(_lookup, gateway_state(request).settings, token)
    if key is None:
        raise Problem(ErrorCode.UNAUTHENTICATED, "unknown or revoked API key", headers=headers)
    return Caller(key)


def require(
    scope: Scope | None,
    *,
    submits: bool = False,
    challenge: str = BEARER_CHALLENGE,
    rate_limited: bool = True,
) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency: the caller's key, which holds ``scope`` (None: any valid key), within
    its rate limit. Runs before the route reads its body, so nobody uploads unauthenticated.
    ``submits``: the route sends a job message, so Redis being down is a 503 here."""

    async def dependency(request: Request) -> Caller:
        caller = await authenticate(request, challenge=challenge)
        if scope is not None and not caller.key.allows(scope):
            raise Problem(
                ErrorCode.INSUFFICIENT_SCOPE,
                f"this route needs the {scope} scope (or admin)",
                required_scope=str(scope),
            )
        if rate_limited:
            await gateway_state(request).limiter.check(caller.key_id, submits=submits)
        return caller

    return dependency
