"""What the routes share within one gateway process (built by the app's lifespan)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from gateway.ratelimit import KeyRateLimiter, VerificationFailureLimit
from gateway.wakeup import OutcomeWakeups
from shared.config import Settings
from shared.producer import FaceauthClient


@dataclass
class GatewayState:
    settings: Settings
    client: FaceauthClient  # uploads, job rows and messages: the gateway is a producer
    limiter: KeyRateLimiter
    failures: VerificationFailureLimit
    wakeups: OutcomeWakeups  # hints that a job's state changed, for ?wait


def gateway_state(request: Request) -> GatewayState:
    found = getattr(request.app.state, "gateway", None)
    if not isinstance(found, GatewayState):
        raise RuntimeError("the gateway's lifespan did not run (use create_app and a server)")
    return found
