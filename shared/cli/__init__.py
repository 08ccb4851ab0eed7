"""The ``faceauth`` command: one entry point for people.

Sub-commands import their heavy dependencies (models, torch) only when run,
so ``faceauth --help`` and producer-side commands stay fast.
"""

from __future__ import annotations

import typer

from shared.cli import decisions, dev, jobs, model, ops
from shared.cli.mounts import mount_optional

app = typer.Typer(
    name="faceauth",
    help="Face biometrics backend: enrollment, verification, liveness, duplicate checks.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold image bytes or embeddings
)
app.add_typer(dev.app, name="dev", help="Embedded dev stack (Redis, Postgres, S3, worker, Flower).")
app.command("demo")(dev.demo)
app.add_typer(jobs.db_app, name="db", help="Database schema.")
app.add_typer(model.app, name="model", help="Embedding model versions and migration.")
app.command("inspect")(jobs.inspect)
app.command("enroll")(jobs.enroll)
app.command("job")(jobs.show_job)
app.command("export")(jobs.export)
app.command("verify")(decisions.verify)
app.command("identify")(decisions.identify)
app.command("calibrate")(decisions.calibrate)
app.command("backfill")(ops.backfill)
app.add_typer(ops.user_app, name="user", help="Per-user administration (right to erasure).")
app.command("status")(ops.status)
app.add_typer(ops.retention_app, name="retention", help="Source-image retention.")
mount_optional(app, "workers.cli_quality", "quality", "Quality scan without enrolling.")
mount_optional(app, "workers.cli_liveness", "liveness", "Liveness (presentation attack) scoring.")
mount_optional(app, "training.cli", "train", "Training jobs (needs the 'training' extra).")


def main() -> None:
    app()
