"""Request-size limit enforced while the body streams in, before it is held anywhere.

A declared ``Content-Length`` over the limit is refused before a byte of the body is
read (and before a ``100 Continue`` is sent, so a polite client never sends it). A
chunked or under-declared body is counted in the ASGI ``receive`` wrapper: the read that
crosses the limit raises ``Problem(413)`` inside the handler that is reading, which
stops reading there; uvicorn then discards what the client still sends. Memory stays
bounded by what the handler chose to keep (see ``uploads``), never by the body size.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.problems import Problem
from shared.errors import ErrorCode


def _too_large(limit: int) -> Problem:
    return Problem(ErrorCode.REQUEST_TOO_LARGE, f"the request body exceeds {limit} bytes")


class BodyLimit:
    """Pure ASGI middleware: no request body larger than ``max_bytes`` gets through."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            problem = Problem(ErrorCode.MALFORMED_REQUEST, "invalid Content-Length header")
            await problem.response()(scope, receive, send)
            return
        if declared is not None and declared > self.max_bytes:
            await _too_large(self.max_bytes).response()(scope, receive, send)
            return
        received = 0
        limit = self.max_bytes

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length; None when absent, -1 when unparseable."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None
