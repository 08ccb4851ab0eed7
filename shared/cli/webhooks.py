"""``faceauth webhooks show|replay JOB_ID``: a job's webhook events and their attempts."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import typer
from rich.table import Table

from shared.cli.output import console, typer_echo
from shared.config import get_settings

app = typer.Typer(no_args_is_help=True)


def _events(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """attempts_of_job's rows (one per attempt) grouped by event."""
    events: dict[str, dict[str, Any]] = {}
    for row in rows:
        event = events.setdefault(
            str(row["event_id"]),
            {"event_id": str(row["event_id"]), "status": row["status"], "attempts": []},
        )
        if row["attempt"] is not None:
            event["attempts"].append(
                {
                    "attempt": row["attempt"],
                    "at": row["at"].isoformat() if row["at"] is not None else None,
                    "status_code": row["status_code"],
                    "latency_ms": row["latency_ms"],
                    "error": row["error"],
                }
            )
    return list(events.values())


@app.command("show")
def show(
    job_id: UUID = typer.Argument(..., help="the job whose webhook events to show"),
    as_json: bool = typer.Option(False, "--json", help="print the events as JSON"),
) -> None:
    """A job's webhook events (webhook-id, status) and every delivery attempt."""
    import psycopg

    from shared.db import webhooks as webhook_repo

    with psycopg.connect(get_settings().database_dsn()) as conn:
        events = _events(webhook_repo.attempts_of_job(conn, job_id))
    if as_json:
        typer_echo(json.dumps({"job_id": str(job_id), "events": events}, indent=2))
        raise typer.Exit(code=0 if events else 1)
    if not events:
        console.print(f"no webhook events for job {job_id}")
        raise typer.Exit(code=1)
    for event in events:
        colour = {"delivered": "green", "failed": "red"}.get(event["status"], "yellow")
        console.print(
            f"event [bold]{event['event_id']}[/] (webhook-id): [{colour}]{event['status']}[/]"
        )
        table = Table("attempt", "at", "status", "latency ms", "error")
        for a in event["attempts"]:
            latency = "-" if a["latency_ms"] is None else f"{a['latency_ms']:.0f}"
            table.add_row(
                str(a["attempt"]),
                a["at"] or "-",
                "-" if a["status_code"] is None else str(a["status_code"]),
                latency,
                a["error"] or "-",
            )
        console.print(table)


@app.command("replay")
def replay(
    job_id: UUID = typer.Argument(..., help="the job whose webhook events to send again"),
) -> None:
    """Send a job's webhook events again (same webhook-id), delivered or failed alike."""
    import psycopg

    from shared.db import webhooks as webhook_repo

    with psycopg.connect(get_settings().database_dsn()) as conn:
        count = webhook_repo.replay_job_events(conn, job_id)
    if count == 0:
        console.print(f"no webhook events for job {job_id}")
        raise typer.Exit(code=1)
    console.print(f"{count} webhook event(s) of job {job_id} due again (same webhook-id)")
