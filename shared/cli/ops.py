"""Operations: ``faceauth backfill``, ``user delete``, ``status`` and ``retention run``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from shared.cli.output import console, print_job, typer_echo
from shared.config import get_settings

user_app = typer.Typer(no_args_is_help=True)
retention_app = typer.Typer(no_args_is_help=True)


# --- backfill ---------------------------------------------------------------------------------
def _print_summary(summary: dict[str, Any]) -> None:
    table = Table("outcome", "rows")
    table.add_row("enrolled", str(summary["enrolled"]))
    table.add_row("  of which flagged as duplicates", str(summary["duplicates_flagged"]))
    table.add_row("skipped (already enrolled)", str(summary["skipped"]))
    for code, n in summary["rejected"].items():
        table.add_row(f"rejected: {code}", str(n))
    for code, n in summary["failed"].items():
        table.add_row(f"failed: {code} (retried next run)", str(n), style="red")
    table.add_row("total", str(summary["rows"]), style="bold")
    console.print(table)
    console.print(
        f"{summary['rows_per_second']:.1f} rows/s, {summary['enrollments_per_second']:.1f}"
        f" enrollments/s over {summary['seconds']:.1f}s; jobs new {summary['new_jobs']},"
        f" reused {summary['reused_jobs']};"
        f" images uploaded {summary['uploaded_images']}"
    )
    if summary.get("outcome_file"):
        console.print(f"per-row outcomes: {summary['outcome_file']}")
    if summary.get("aborted"):
        console.print(f"[red]stopped early: {summary['aborted']}[/]")


def backfill(
    source: str | None = typer.Argument(
        None, help="manifest (.csv / .jsonl) or s3://<bucket>/<prefix> laid out <user_id>/<image>"
    ),
    reembed: bool = typer.Option(
        False,
        "--reembed",
        help="model migration: re-embed every enrolled user from the stored source images"
        " with the workers' current model version (no SOURCE)",
    ),
    outcomes: Path | None = typer.Option(
        None, help="per-row outcome file (JSONL); default: beside the manifest"
    ),
    max_in_flight: int = typer.Option(64, min=1, help="most submitted, unfinished jobs"),
    chunk_size: int = typer.Option(500, min=1, help="rows checked against the database at once"),
    liveness: bool = typer.Option(False, help="score liveness (off: photos were not live)"),
    model_version: str | None = typer.Option(
        None, help="skip users enrolled with this version (default: the active one)"
    ),
    include_erased: bool = typer.Option(False, help="also enroll users who were erased on request"),
    upload_threads: int = typer.Option(4, min=1, help="parallel uploads of local files"),
    stall_timeout: float = typer.Option(600.0, help="stop when no job finished for this long"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Enroll many users from a manifest or an S3 prefix; resumable, bounded, idempotent."""
    from shared.backfill import BackfillOptions, ManifestError, run_backfill

    if reembed:
        if source is not None:
            raise typer.BadParameter("--reembed takes no SOURCE")
        from shared.cli.model import current_model_version, reembed_all

        target = model_version or current_model_version()
        result = reembed_all(target, max_in_flight, stall_timeout)
        raise typer.Exit(code=0 if result["failed"] == 0 else 1)
    if source is None:
        raise typer.BadParameter("SOURCE is required (or --reembed)")

    options = BackfillOptions(
        max_in_flight=max_in_flight,
        chunk_size=chunk_size,
        liveness=liveness,
        model_version=model_version,
        include_erased=include_erased,
        upload_threads=upload_threads,
        stall_timeout_s=stall_timeout,
        outcome_path=outcomes,
        progress=progress,
    )
    try:
        summary = run_backfill(source, options).to_dict()
    except ManifestError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(code=2) from exc
    if as_json:
        typer_echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    raise typer.Exit(code=1 if summary["failed"] or summary["aborted"] else 0)


# --- deletion ---------------------------------------------------------------------------------
@user_app.command("delete")
def delete_user(
    user_id: str = typer.Argument(..., help="the user to erase"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    timeout: float = typer.Option(120.0, help="seconds to wait for the deletion job"),
    as_json: bool = typer.Option(False, "--json", help="print the job as JSON"),
) -> None:
    """Erase USER_ID: templates, source and probe images, pending jobs. Keeps an audit entry."""
    from shared.producer import FaceauthClient

    if not yes:
        typer.confirm(f"Erase all biometric data of {user_id!r}?", abort=True)
    client = FaceauthClient()
    job = client.wait(client.submit_user_deletion(user_id), timeout=timeout)
    if as_json or job.status != "succeeded":
        print_job(job, as_json=as_json)
    else:
        result = job.result or {}
        table = Table("deleted", "count")
        for key in (
            "templates_deleted",
            "active_templates_deleted",
            "enrollments_deleted",
            "images_deleted",
            "images_already_gone",
            "images_kept_shared",
            "jobs_cancelled",
        ):
            table.add_row(key.replace("_", " "), str(result.get(key, 0)))
        console.print(table)
        existed = "existed" if result.get("user_existed") else "had no user record"
        console.print(f"user {user_id} {existed}; audit entry written (job {job.job_id})")
    raise typer.Exit(code=0 if job.status == "succeeded" else 1)


# --- status -----------------------------------------------------------------------------------
def status(
    since: int = typer.Option(3600, min=1, help="job counts over the last SINCE seconds"),
    timeout: float = typer.Option(1.0, help="seconds to wait for worker replies"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Queue depths, live workers, job counts by status and error codes (last hour)."""
    from shared.monitoring import collect_status

    report = collect_status(get_settings(), since_s=since, timeout=timeout)
    if as_json:
        typer_echo(json.dumps(report.to_dict(), indent=2))
        raise typer.Exit(code=0 if report.healthy else 1)
    queues = Table("queue", "waiting")
    for name, depth in (report.queues or {}).items():
        queues.add_row(name, str(depth))
    if report.unacked is not None:
        queues.add_row("(delivered, not acknowledged)", str(report.unacked))
    console.print(queues)
    workers = Table("worker", "queues", "running")
    for worker in report.workers or []:
        running = "?" if worker.active_tasks is None else str(worker.active_tasks)
        workers.add_row(worker.name, ", ".join(worker.queues), running)
    console.print(workers)
    jobs = Table(f"job status (last {since}s)", "count")
    for name, count in sorted((report.jobs_by_status or {}).items()):
        jobs.add_row(name, str(count))
    console.print(jobs)
    errors = Table(f"error code (last {since}s)", "count")
    for code, count in sorted((report.error_codes or {}).items(), key=lambda kv: -kv[1]):
        errors.add_row(code, str(count))
    console.print(errors)
    for problem in report.problems:
        console.print(f"[red]problem: {problem}[/]")
    raise typer.Exit(code=0 if report.healthy else 1)


# --- retention --------------------------------------------------------------------------------
@retention_app.command("run")
def retention_run(
    days: float | None = typer.Option(
        None, help="age limit in days (default: FACEAUTH_SOURCE_IMAGE_RETENTION_DAYS)"
    ),
    dry_run: bool = typer.Option(False, help="count what would be deleted, delete nothing"),
    page_size: int = typer.Option(500, min=1, max=10_000, help="users per job"),
    timeout: float = typer.Option(600.0, help="seconds to wait for each job"),
    as_json: bool = typer.Option(False, "--json", help="print the totals as JSON"),
) -> None:
    """Delete source images of users who opted out of re-embedding, once old enough."""
    from shared.producer import FaceauthClient
    from shared.schemas import JobKind

    if days is not None and days <= 0:
        raise typer.BadParameter("--days must be positive")
    client = FaceauthClient()
    totals: dict[str, Any] = {"jobs": 0}
    after: str | None = None
    while True:
        payload: dict[str, Any] = {"max_users": page_size, "dry_run": dry_run}
        if days is not None:
            payload["older_than_days"] = days
        if after is not None:
            payload["after_user"] = after
        job = client.wait(client.submit(JobKind.APPLY_RETENTION, payload), timeout=timeout)
        if job.status != "succeeded":
            print_job(job, as_json=as_json)
            raise typer.Exit(code=1)
        result = job.result or {}
        totals["jobs"] += 1
        for key, value in result.items():
            if type(value) is int:  # counts (not flags, not the float age limit)
                totals[key] = totals.get(key, 0) + value
        totals.update(
            {k: result.get(k) for k in ("older_than_days", "dry_run", "disabled", "cutoff")}
        )
        after = result.get("next_after_user")
        if not after:
            break
    if as_json:
        typer_echo(json.dumps(totals, indent=2))
        return
    if totals.get("disabled"):
        console.print("retention is off (FACEAUTH_SOURCE_IMAGE_RETENTION_DAYS=0): nothing to do")
        return
    table = Table("retention" + (" (dry run)" if dry_run else ""), "count")
    for key, value in totals.items():
        if type(value) is int:
            table.add_row(key.replace("_", " "), str(value))
    console.print(table)
