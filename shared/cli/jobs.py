"""Producer-side commands: submit through the queue and print the outcome."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import typer

from shared.cli.output import console, print_job
from shared.config import get_settings

db_app = typer.Typer(no_args_is_help=True)


@db_app.command("migrate")
def migrate() -> None:
    """Apply pending schema migrations as the owner role and grant the application role.

    Safe to run repeatedly and concurrently. Connects with FACEAUTH_MIGRATION_DATABASE_URL
    (else FACEAUTH_DATABASE_URL) and grants FACEAUTH_DB_APP_ROLE its privileges.
    """
    from shared.db.migrations import apply_migrations

    settings = get_settings()
    applied = apply_migrations(settings.migration_dsn(), app_role=settings.db_app_role)
    console.print(f"applied: {applied or 'nothing (schema is current)'}")


def _client():  # type: ignore[no-untyped-def]
    from shared.producer import FaceauthClient

    return FaceauthClient()


def inspect(
    image: Path = typer.Argument(..., exists=True, dir_okay=False, help="image file"),
    timeout: float = typer.Option(60.0, help="seconds to wait for the result"),
    as_json: bool = typer.Option(False, "--json", help="print the job as JSON"),
) -> None:
    """Upload IMAGE, run the inspect job (decode + face count) through the queue."""
    client = _client()
    job_id = client.submit_inspection(image.read_bytes())
    job = client.wait(job_id, timeout=timeout)
    print_job(job, as_json=as_json)
    raise typer.Exit(code=0 if job.status == "succeeded" else 1)


def enroll(
    user_id: str = typer.Argument(..., help="the user's id in your system"),
    images: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="1-3 photos"),
    idempotency_key: str | None = typer.Option(None, help="resubmitting the same key is a no-op"),
    no_liveness: bool = typer.Option(False, "--no-liveness", help="back-office backfill only"),
    timeout: float = typer.Option(120.0, help="seconds to wait for the result"),
    as_json: bool = typer.Option(False, "--json", help="print the job as JSON"),
) -> None:
    """Enroll USER_ID with IMAGES through the queue and print each image's verdict."""
    client = _client()
    job_id = client.submit_enrollment(
        user_id,
        [p.read_bytes() for p in images],
        idempotency_key=idempotency_key,
        liveness=not no_liveness,
    )
    job = client.wait(job_id, timeout=timeout)
    print_job(job, as_json=as_json)
    raise typer.Exit(code=0 if job.status == "succeeded" else 1)


def show_job(
    job_id: UUID = typer.Argument(..., help="job id"),
    as_json: bool = typer.Option(False, "--json", help="print the job as JSON"),
) -> None:
    """Show a job's durable record from Postgres."""
    job = _client().get_job(job_id)
    if job is None:
        console.print(f"no job {job_id}")
        raise typer.Exit(code=1)
    print_job(job, as_json=as_json)


def export(
    user_id: str = typer.Argument(..., help="user whose templates to export"),
    out: Path = typer.Option(..., "--out", "-o", help="file ending in .json or .parquet"),
    include_inactive: bool = typer.Option(False, help="also the replaced templates"),
) -> None:
    """Write a user's templates (embeddings as float lists, quality JSON) to JSON or Parquet."""
    import psycopg

    from shared.export import user_templates, write_json, write_parquet

    if out.suffix not in (".json", ".parquet"):
        raise typer.BadParameter("--out must end in .json or .parquet")
    with psycopg.connect(get_settings().database_dsn()) as conn:
        records = user_templates(conn, user_id, include_inactive=include_inactive)
    if not records:
        console.print(f"no templates for user {user_id!r}")
        raise typer.Exit(code=1)
    (write_json if out.suffix == ".json" else write_parquet)(records, out)
    console.print(f"{len(records)} template(s) written to {out}")
