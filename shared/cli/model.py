"""``faceauth model``: which embedding model serves, and migrating to a new one.

A migration: deploy workers with the new pack in FACEAUTH_FACE_PACK_DIR and the old one
in FACEAUTH_PREVIOUS_FACE_PACK_DIR, run ``faceauth model reembed`` (progress with
``faceauth model status``), then ``faceauth model activate NEW_VERSION``.
"""

from __future__ import annotations

import typer
from rich.table import Table

from shared.cli.output import console
from shared.cli.plugins import model_version_hook
from shared.config import get_settings

# ``model info`` loads the face pack, so it lives in ``workers.cli.model`` and joins this
# group when the workers package is installed.
app = typer.Typer(no_args_is_help=True)


def current_model_version() -> str:
    """The model version the configured workers write.

    Only the workers can tell (they load the face pack): asked through the
    ``faceauth.model_version`` entry point, since shared never imports workers.
    """
    hook = model_version_hook()
    if hook is None:
        raise typer.BadParameter(
            "cannot tell the workers' model version here (the workers package is not"
            " installed): name the target version"
        )
    return hook()


@app.command("status")
def status() -> None:
    """Users with active templates per model version: migration progress."""
    import psycopg

    from shared.db import templates as template_repo

    with psycopg.connect(get_settings().database_dsn()) as conn:
        total, versions = template_repo.migration_progress(conn)
    table = Table("model version", "name", "dim", "active", "users", "of all users")
    for v in versions:
        share = f"{v.users / total:.1%}" if total else "-"
        table.add_row(
            v.model_version,
            v.model_name,
            str(v.embedding_dim),
            "yes" if v.is_active else "",
            str(v.users),
            share,
        )
    console.print(table)
    console.print(f"users with templates: {total}")


@app.command("activate")
def activate(model_version: str = typer.Argument(..., help="version to serve 1:N search")) -> None:
    """Make MODEL_VERSION the active one (1:N search and duplicate checks use it)."""
    import psycopg

    from shared.db import templates as template_repo

    with psycopg.connect(get_settings().database_dsn()) as conn, conn.transaction():
        template_repo.activate_model_version(conn, model_version)
    console.print(f"active model version: {model_version}")


@app.command("search-index")
def search_index(
    kind: str = typer.Argument(..., help="vector, halfvec or bit"),
    model_version: str | None = typer.Option(None, help="default: the active version"),
) -> None:
    """Build KIND's 1:N index for a model version and switch its searches to it.

    Run it off-peak: the build takes minutes per million templates and blocks
    enrollments of that version meanwhile. Searches move to the new index when it is
    committed; the old index stays until dropped by a DBA (a rollback is one command).
    """
    import psycopg

    from shared.db import templates as template_repo

    if kind not in template_repo.SEARCH_INDEX_KINDS:
        raise typer.BadParameter(
            f"KIND must be one of {', '.join(template_repo.SEARCH_INDEX_KINDS)}"
        )
    with psycopg.connect(get_settings().database_dsn()) as conn, conn.transaction():
        version = model_version or template_repo.active_model_version(conn)
        if version is None:
            raise typer.BadParameter("no model version is registered yet")
        dim = template_repo.embedding_dim_of(conn, version)
        if dim is None:
            raise typer.BadParameter(f"model version {version!r} is not registered")
        name = template_repo.build_search_index(conn, version, dim, kind)
    console.print(f"{version}: 1:N search uses {kind} index {name}")


@app.command("reembed")
def reembed(
    target_version: str | None = typer.Option(None, help="default: the configured pack's version"),
    max_in_flight: int = typer.Option(32, min=1, help="jobs submitted but not finished"),
    timeout: float = typer.Option(3600.0, help="give up after this many seconds"),
) -> None:
    """Re-embed every user who has no templates of the target version (resumable)."""
    reembed_all(target_version or current_model_version(), max_in_flight, timeout)


def reembed_all(target: str, max_in_flight: int, timeout: float) -> dict[str, int]:
    from shared.backfill.reembed import reembed_all as run_reembed

    outcome = run_reembed(target, max_in_flight, timeout)
    console.print(outcome)
    return outcome
