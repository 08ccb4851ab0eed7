"""``faceauth verify`` and ``identify`` (``calibrate`` is in ``workers.cli.calibrate``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from shared.cli.output import console, print_job

if TYPE_CHECKING:
    from shared.schemas import JobView


def _print_decision(job: JobView, as_json: bool) -> None:
    if as_json or job.status != "succeeded":
        print_job(job, as_json=as_json)
        return
    result = job.result or {}
    console.print(f"decision: [bold]{result.get('decision')}[/]")
    if "score" in result:
        th = result.get("thresholds", {})
        console.print(
            f"score {result['score']:.4f} ({result.get('decided_by')}); "
            f"T_low {th.get('t_low')}, T_high {th.get('t_high')} from {th.get('source')}"
        )
    for cand in result.get("candidates", []):
        console.print(
            f"  #{cand['rank']} {cand['user_id']}: {cand['score']:.4f} {cand['decision']}"
        )
    for reason in result.get("reasons", []):
        console.print(f"  - {reason.get('code')}: {reason.get('message', '')}")


def verify(
    user_id: str = typer.Argument(..., help="claimed user id"),
    image: Path = typer.Argument(..., exists=True, dir_okay=False, help="probe photo"),
    no_liveness: bool = typer.Option(False, "--no-liveness", help="skip the liveness check"),
    timeout: float = typer.Option(60.0, help="seconds to wait"),
    as_json: bool = typer.Option(False, "--json", help="print the job as JSON"),
) -> None:
    """1:1: does IMAGE show USER_ID? Prints accept / step_up / reject and why."""
    from shared.producer import FaceauthClient

    client = FaceauthClient()
    job = client.wait(
        client.submit_verification(user_id, image.read_bytes(), liveness=not no_liveness),
        timeout=timeout,
    )
    _print_decision(job, as_json)
    raise typer.Exit(code=0 if job.status == "succeeded" else 1)


def identify(
    image: Path = typer.Argument(..., exists=True, dir_okay=False, help="probe photo"),
    top_k: int | None = typer.Option(
        None, "--top-k", min=1, max=100, help="candidates (default FACEAUTH_IDENTIFY_TOP_K)"
    ),
    no_liveness: bool = typer.Option(False, "--no-liveness", help="skip the liveness check"),
    timeout: float = typer.Option(60.0, help="seconds to wait"),
    as_json: bool = typer.Option(False, "--json", help="print the job as JSON"),
) -> None:
    """1:N: the enrolled users most similar to IMAGE."""
    from shared.producer import FaceauthClient

    client = FaceauthClient()
    job = client.wait(
        client.submit_identification(image.read_bytes(), top_k=top_k, liveness=not no_liveness),
        timeout=timeout,
    )
    _print_decision(job, as_json)
    raise typer.Exit(code=0 if job.status == "succeeded" else 1)
