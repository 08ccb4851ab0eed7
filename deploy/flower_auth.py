"""Run Flower with HTTP basic auth on every route; a drop-in for the ``celery`` command.

    python -m deploy.flower_auth -A workers.celery_app:app flower --port=5555
    python -m deploy.flower_auth healthcheck [URL]

Flower 2.2 checks ``--basic-auth`` only in handlers decorated ``@web.authenticated``:
``/metrics``, ``/healthcheck``, ``/static/...``, ``/login``, ``/logout`` and unknown paths
(its 404 page) answer anyone. This launcher puts the check in front of Flower's URL table
instead (``Flower.find_handler``), so no route is reached without the credentials, and
refuses to start without basic auth at all.

Credentials: Flower's own ``--basic-auth`` / ``FLOWER_BASIC_AUTH`` (``user:password``,
comma-separated for several), else ``FACEAUTH_FLOWER_USER`` and
``FACEAUTH_FLOWER_PASSWORD``; environment variables keep them off the command line,
which is world-readable in /proc. ``healthcheck`` GETs ``/healthcheck`` (default
``http://127.0.0.1:5555``) with the same credentials and exits 0 on HTTP 200.
"""

from __future__ import annotations

import binascii
import hmac
import os
import sys
import urllib.request
from base64 import b64decode, b64encode
from collections.abc import Iterable, Sequence
from typing import Any

REALM = "flower"
DEFAULT_HEALTHCHECK_URL = "http://127.0.0.1:5555"


def credentials_from_env(env: dict[str, str] | None = None) -> str | None:
    """``FLOWER_BASIC_AUTH``, else ``FACEAUTH_FLOWER_USER:FACEAUTH_FLOWER_PASSWORD``."""
    env = dict(os.environ) if env is None else env
    if env.get("FLOWER_BASIC_AUTH"):
        return env["FLOWER_BASIC_AUTH"]
    user = env.get("FACEAUTH_FLOWER_USER") or "admin"
    password = env.get("FACEAUTH_FLOWER_PASSWORD")
    return f"{user}:{password}" if password else None


def authorized(header: str | None, credentials: Iterable[str]) -> bool:
    """Whether an ``Authorization`` header carries one of ``credentials`` (``user:pw``).

    Every stored credential is compared in constant time, whatever matched before.
    """
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return False
    try:
        offered = b64decode(token.strip().encode(), validate=True)
    except (binascii.Error, ValueError):
        return False
    ok = False
    for stored in credentials:
        if stored and ":" in stored:
            ok |= hmac.compare_digest(stored.encode(), offered)
    return ok


def install() -> None:
    """Patch Flower: basic auth before routing, and no start without basic auth."""
    import tornado.web
    from flower.app import Flower

    if getattr(Flower, "_faceauth_auth_installed", False):
        return

    class Unauthorized(tornado.web.RequestHandler):
        """Answers 401 to any method, before Flower's handler is even chosen."""

        def check_xsrf_cookie(self) -> None:  # a POST without credentials gets 401, not 403
            return None

        def prepare(self) -> None:
            self.set_status(401)
            self.set_header("WWW-Authenticate", f'Basic realm="{REALM}"')
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.finish("Access denied")

    original_find_handler = Flower.find_handler
    original_start_http_server = Flower.start_http_server

    def find_handler(self: Any, request: Any, **kwargs: Any) -> Any:
        if not authorized(request.headers.get("Authorization"), self.options.basic_auth or ()):
            return self.get_handler_delegate(request, Unauthorized)
        return original_find_handler(self, request, **kwargs)

    def start_http_server(self: Any) -> Any:
        credentials = [c for c in (self.options.basic_auth or ()) if c and ":" in c]
        if not credentials or any(not c.partition(":")[2] for c in credentials):
            raise SystemExit(
                "Flower needs basic auth (user:password): set FACEAUTH_FLOWER_PASSWORD"
                " or FLOWER_BASIC_AUTH"
            )
        return original_start_http_server(self)

    Flower.find_handler = find_handler
    Flower.start_http_server = start_http_server
    Flower._faceauth_auth_installed = True


def healthcheck(url: str = DEFAULT_HEALTHCHECK_URL, *, timeout: float = 5.0) -> int:
    """0 when ``URL/healthcheck`` answers 200 to the configured credentials, else 1."""
    credentials = credentials_from_env()
    if credentials is None:
        print("flower healthcheck: no credentials in the environment", file=sys.stderr)
        return 1
    token = b64encode(credentials.split(",")[0].encode()).decode()
    request = urllib.request.Request(
        url.rstrip("/") + "/healthcheck", headers={"Authorization": f"Basic {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # our own URL
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"flower healthcheck: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["healthcheck"]:
        return healthcheck(*args[1:2])
    if "flower" not in args:
        print("usage: python -m deploy.flower_auth -A APP flower [FLOWER OPTIONS]", file=sys.stderr)
        return 2
    credentials = credentials_from_env()
    if credentials is not None:
        os.environ["FLOWER_BASIC_AUTH"] = credentials  # read by Flower's option parser
    install()
    from celery.bin.celery import main as celery_main

    sys.argv = ["celery", *args]
    celery_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
