"""How packages contribute commands to ``faceauth`` (entry points, mounting helpers).

Each package declares a ``register(app: typer.Typer) -> None`` function in the
``faceauth.commands`` entry-point group (pyproject.toml); the root (``shared.cli``) calls
them all, ``shared`` first. A package's ``register`` mounts its commands with
``mount_group`` / ``mount_command``: a command whose optional dependencies are missing
here (``requires``, or a ``ModuleNotFoundError`` while importing its module) stays
listed, marked unavailable, and exits with status 2.

Modules that contribute commands import only light things at module level (typer, rich,
shared.config, ...); models, torch and the dev stack are imported inside the commands, so
``faceauth --help`` stays fast.

``shared`` never imports the packages above it: where a shared command needs something
only they can answer, it asks an entry-point group (``model_version_hook``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import typer

COMMANDS_GROUP = "faceauth.commands"
# "The model version the configured workers write": a zero-argument callable -> str.
MODEL_VERSION_GROUP = "faceauth.model_version"
CORE_PACKAGE = "shared"
EXIT_UNAVAILABLE = 2


def contributions(group: str = COMMANDS_GROUP) -> list[EntryPoint]:
    """The group's entry points, one per name: ``shared`` first, then by name."""
    unique: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        unique.setdefault(ep.name, ep)  # a distribution seen twice on sys.path
    return sorted(unique.values(), key=lambda ep: (ep.name != CORE_PACKAGE, ep.name))


def model_version_hook() -> Callable[[], str] | None:
    """The installed package that can tell the workers' model version, if any."""
    for ep in contributions(MODEL_VERSION_GROUP):
        try:
            hook: Callable[[], str] = ep.load()
        except ModuleNotFoundError:
            continue
        return hook
    return None


def missing_requirement(requires: Sequence[str]) -> str | None:
    """The first top-level module of ``requires`` not installed here (nothing imported)."""
    for module in requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # e.g. sys.modules[module] set to None
            found = False
        if not found:
            return module
    return None


def group(parent: typer.Typer, name: str, help_text: str | None = None) -> typer.Typer:
    """The sub-command group ``name`` of ``parent``, added when no package added it yet.

    Lets a package add commands to a group another package owns (``model info``).
    """
    for info in parent.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    sub = typer.Typer(no_args_is_help=True)
    parent.add_typer(sub, name=name, help=help_text)
    return sub


def mount_group(
    parent: typer.Typer,
    name: str,
    help_text: str,
    load: Callable[[], typer.Typer],
    *,
    requires: Sequence[str] = (),
) -> None:
    """Add the group ``load()`` returns as ``name``, or an unavailable placeholder."""
    _mount(
        parent,
        name,
        help_text,
        load,
        requires,
        lambda sub: parent.add_typer(sub, name=name, help=help_text),
    )


def mount_command(
    parent: typer.Typer,
    name: str,
    help_text: str,
    load: Callable[[], Callable[..., Any]],
    *,
    requires: Sequence[str] = (),
) -> None:
    """Add the command ``load()`` returns as ``name``, or an unavailable placeholder.

    ``help_text`` is used only for the placeholder: an available command keeps its
    docstring as its help.
    """
    _mount(parent, name, help_text, load, requires, lambda command: parent.command(name)(command))


def _mount(
    parent: typer.Typer,
    name: str,
    help_text: str,
    load: Callable[[], Any],
    requires: Sequence[str],
    add: Callable[[Any], object],
) -> None:
    """``add(load())`` when the requirements are importable, else an unavailable placeholder."""
    missing = missing_requirement(requires)
    if missing is None:
        try:
            loaded = load()
        except ModuleNotFoundError as exc:
            missing = exc.name or name
        else:
            add(loaded)
            return
    _unavailable(parent, name, help_text, missing)


def _unavailable(parent: typer.Typer, name: str, help_text: str, missing: str) -> None:
    # e.g. a producer-only install without the workers' model runtime or the training extra
    text = f"{help_text} (unavailable: {missing} is not installed)"

    @parent.command(
        name,
        help=text,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def _placeholder() -> None:
        typer.echo(f"faceauth {name}: unavailable here, {missing} is not installed", err=True)
        raise typer.Exit(code=EXIT_UNAVAILABLE)
