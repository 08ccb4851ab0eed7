"""The ``faceauth`` command: a thin root that every package contributes to.

The root knows no command itself. Each package registers its own in the
``faceauth.commands`` entry-point group (see ``shared.cli.plugins``): ``shared`` the
producer and admin commands (``shared.cli.commands``), ``workers`` those that load models
or run worker code, ``deploy`` the dev stack and demo, ``training`` the training jobs.
A package that is not installed contributes nothing. The root imports no model runtime
and names no other package, so ``faceauth --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from functools import cache
from typing import Any

import typer

from shared.cli import plugins

HELP = "Face biometrics backend: enrollment, verification, liveness, duplicate checks."
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def build_app() -> typer.Typer:
    """A fresh root with the commands of every installed package."""
    app = typer.Typer(
        name="faceauth",
        help=HELP,
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,  # locals may hold image bytes or embeddings
    )
    app.callback()(_startup)
    contributed = plugins.contributions()
    if not any(ep.name == plugins.CORE_PACKAGE for ep in contributed):
        # Run from a source tree that was never pip-installed: no entry points at all.
        from shared.cli.commands import register

        register(app)
    for ep in contributed:
        try:
            register_package = ep.load()
        except ModuleNotFoundError as exc:
            if exc.name and ep.module.split(".")[0] == exc.name.split(".")[0]:
                continue  # the package itself is not installed here: it contributes nothing
            typer.echo(f"faceauth: no commands from {ep.name!r}: {exc}", err=True)
            continue
        register_package(app)
    return app


@cache
def get_app() -> typer.Typer:
    """The process's root, built once."""
    return build_app()


def main() -> None:
    get_app()()


def __getattr__(name: str) -> Any:
    # ``from shared.cli import app``: built on first use, not when the package is imported.
    if name == "app":
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- logging ----------------------------------------------------------------------------------
class _CurrentStderr(logging.StreamHandler[Any]):
    """Writes to whatever ``sys.stderr`` is at the time (CliRunner swaps it per call)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr


def _startup() -> None:
    # Runs before any sub-command (not for ``faceauth --help``).
    configure_logging()


def configure_logging() -> None:
    """Apply FACEAUTH_LOG_LEVEL to the contributing packages' loggers, once per process.

    Log lines go to stderr (stdout carries results, e.g. ``--json``). A host that set up
    logging already (a test runner, an embedding application) keeps its handlers; other
    libraries stay at the root logger's level (WARNING unless the host changed it).
    """
    from pydantic import ValidationError

    from shared.config import get_settings

    try:
        level_name = get_settings().log_level.upper()
    except ValidationError:
        level_name = "INFO"  # the command that needs the settings reports what is wrong
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        typer.echo(f"FACEAUTH_LOG_LEVEL: unknown log level {level_name!r}", err=True)
        raise typer.Exit(code=2)
    root = logging.getLogger()
    if not root.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    packages = {plugins.CORE_PACKAGE} | {ep.module.split(".")[0] for ep in plugins.contributions()}
    for package in sorted(packages):
        logging.getLogger(package).setLevel(level)
