"""The commands the gateway contributes to ``faceauth`` (entry point ``gateway``):
``faceauth gateway`` (serve) and ``faceauth apikey`` (credentials).

Imports stay light at module level (typer, shared.config): FastAPI and uvicorn load when
the server starts, so ``faceauth --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from shared.cli.plugins import mount_command
from shared.config import get_settings

SERVER_REQUIRES = ("fastapi", "uvicorn", "python_multipart", "limits")


def serve(
    host: str | None = typer.Option(None, help="listen address (default FACEAUTH_GATEWAY_HOST)"),
    port: int | None = typer.Option(None, help="port (default FACEAUTH_GATEWAY_PORT)"),
    workers: int | None = typer.Option(
        None, min=1, help="uvicorn worker processes (default FACEAUTH_GATEWAY_WORKERS)"
    ),
    access_log: bool = typer.Option(True, help="log one line per request"),
) -> None:
    """Run the HTTP gateway (FastAPI on uvicorn): REST API, /docs, /metrics, /readyz."""
    from gateway.server import run

    run(get_settings(), host=host, port=port, workers=workers, access_log=access_log)


def _load_serve() -> Callable[..., Any]:
    return serve


def register(root: typer.Typer) -> None:
    """Contribute ``gateway`` and ``apikey`` to the ``faceauth`` root."""
    from gateway.apikeys import app as apikey_app

    mount_command(root, "gateway", "Run the HTTP gateway.", _load_serve, requires=SERVER_REQUIRES)
    root.add_typer(apikey_app, name="apikey", help="API keys of the HTTP gateway.")
