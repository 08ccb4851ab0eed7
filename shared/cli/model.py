"""``faceauth model``: which embedding model serves, and migrating to a new one.

A migration: deploy workers with the new pack in FACEAUTH_FACE_PACK_DIR and the old one
in FACEAUTH_PREVIOUS_FACE_PACK_DIR, run ``faceauth model reembed`` (progress with
``faceauth model status``), then ``faceauth model activate NEW_VERSION``.
"""

from __future__ import annotations

import time
from collections import deque
from uuid import UUID

import psycopg
import typer
from rich.table import Table
from tqdm import tqdm

from shared.cli.output import console
from shared.config import get_settings
from shared.db import templates as template_repo

app = typer.Typer(no_args_is_help=True)


def current_model_version() -> str:
    """The model version the configured workers write (loads the pack locally)."""
    from workers.inference.face_pack import FacePack

    settings = get_settings()
    pack = FacePack.load(settings.face_pack_dir, det_size=settings.face_det_size)
    return settings.face_pack_version or pack.model_version


@app.command("info")
def info() -> None:
    """Load the configured face pack and print its version and dimension."""
    from workers.inference.face_pack import FacePack

    settings = get_settings()
    pack = FacePack.load(settings.face_pack_dir, det_size=settings.face_det_size)
    console.print(f"pack dir:      {pack.pack_dir}")
    console.print(f"model name:    {pack.model_name}")
    console.print(f"model version: {settings.face_pack_version or pack.model_version}")
    console.print(f"embedding dim: {pack.embedding_dim}")
    console.print(f"providers:     {pack.providers}")


@app.command("status")
def status() -> None:
    """Users with active templates per model version: migration progress."""
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
    with psycopg.connect(get_settings().database_dsn()) as conn, conn.transaction():
        template_repo.activate_model_version(conn, model_version)
    console.print(f"active model version: {model_version}")


@app.command("reembed")
def reembed(
    target_version: str | None = typer.Option(None, help="default: the configured pack's version"),
    max_in_flight: int = typer.Option(32, min=1, help="jobs submitted but not finished"),
    timeout: float = typer.Option(3600.0, help="give up after this many seconds"),
) -> None:
    """Re-embed every user who has no templates of the target version (resumable)."""
    reembed_all(target_version or current_model_version(), max_in_flight, timeout)


def reembed_all(target: str, max_in_flight: int, timeout: float) -> dict[str, int]:
    from shared.backfill.tracking import job_states
    from shared.db.pool import get_pool
    from shared.producer import FaceauthClient

    settings = get_settings()
    client = FaceauthClient(settings)
    with psycopg.connect(settings.database_dsn()) as conn:
        todo = template_repo.users_missing_version(conn, target)
    outcome = {"reembedded": 0, "already_current": 0, "failed": 0}
    pending: dict[UUID, str] = {}
    deadline = time.monotonic() + timeout
    bar = tqdm(total=len(todo), desc=f"re-embed to {target}", unit="user")
    queue = deque(todo)
    while (queue or pending) and time.monotonic() < deadline:
        while queue and len(pending) < max_in_flight:
            user = queue.popleft()
            job_id = client.submit_reembed(user, idempotency_key=f"reembed:{target}:{user}")
            pending[job_id] = user
        with get_pool(settings).connection() as conn:
            states = job_states(conn, list(pending))  # one query for every job in flight
        for job_id, state in states.items():
            if not state.status.finished:
                continue
            status = (state.result or {}).get("status") if state.status == "succeeded" else None
            outcome[status if status in outcome else "failed"] += 1
            del pending[job_id]
            bar.update(1)
        time.sleep(0.2)
    bar.close()
    console.print(outcome)
    return outcome
