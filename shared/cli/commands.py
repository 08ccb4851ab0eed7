"""The commands ``shared`` contributes to ``faceauth``: producer and admin commands.

They need only this package (the producer client, the database, the store): enroll,
verify, identify, inspect, job, export, backfill, user delete, status, retention,
db migrate and model status / activate / reembed. Commands that load models or run
worker code live in ``workers.cli``; the dev stack and demo in ``deploy.cli``; the
training jobs in ``training.cli``.
"""

from __future__ import annotations

import typer

from shared.cli import decisions, jobs, model, ops, webhooks


def register(app: typer.Typer) -> None:
    app.add_typer(jobs.db_app, name="db", help="Database schema.")
    # A fresh group per root: other packages add their commands to it (``model info``).
    model_app = typer.Typer(no_args_is_help=True)
    model_app.add_typer(model.app)  # no name: its commands sit directly under ``model``
    app.add_typer(model_app, name="model", help="Embedding model versions and migration.")
    app.command("inspect")(jobs.inspect)
    app.command("enroll")(jobs.enroll)
    app.command("job")(jobs.show_job)
    app.command("export")(jobs.export)
    app.command("verify")(decisions.verify)
    app.command("identify")(decisions.identify)
    app.command("backfill")(ops.backfill)
    app.add_typer(ops.user_app, name="user", help="Per-user administration (right to erasure).")
    app.command("status")(ops.status)
    app.add_typer(ops.retention_app, name="retention", help="Source-image retention.")
    app.add_typer(webhooks.app, name="webhooks", help="Webhook events of a job: show, replay.")
