"""Mount sub-command groups that live in other packages."""

from __future__ import annotations

import importlib

import typer


def mount_optional(parent: typer.Typer, module: str, name: str, help_text: str) -> None:
    """Add ``module.app`` as ``name``; skip it when its package is not installed here."""
    try:
        sub = importlib.import_module(module).app
    except ModuleNotFoundError as exc:
        # e.g. a producer-only install without the worker's model dependencies
        missing = exc.name or module

        @parent.command(name, help=f"{help_text} (unavailable: {missing} is not installed)")
        def _unavailable() -> None:
            raise typer.Exit(code=2)

        return
    parent.add_typer(sub, name=name, help=help_text)
