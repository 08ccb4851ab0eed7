"""Printing job results for people (rich) or machines (--json)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # pydantic models: not needed to print, nor for ``faceauth --help``
    from shared.schemas import JobView

console = Console()


def print_job(job: JobView, *, as_json: bool) -> None:
    data = job.model_dump(mode="json")
    if as_json:
        typer_echo(json.dumps(data, indent=2))
        return
    colour = "green" if job.status == "succeeded" else "red"
    console.print(f"job [bold]{job.job_id}[/] {job.kind}: [{colour}]{job.status}[/]")
    if job.error:
        console.print(f"  error [bold]{job.error['code']}[/]: {job.error['message']}")
    result = job.result or {}
    if "face_count" in result:
        console.print(
            f"  {result['width']}x{result['height']} {result['format']},"
            f" {result['face_count']} face(s)"
        )
    images = result.get("images") or result.get("details", {}).get("images")
    if images:
        print_image_verdicts(images)


def print_image_verdicts(images: list[dict[str, Any]]) -> None:
    table = Table("image", "passed", "faces", "reasons")
    for img in images:
        reasons = "; ".join(r.get("message", r.get("code", "")) for r in img.get("reasons", []))
        table.add_row(
            str(img.get("image_key")),
            "yes" if img.get("passed") else "no",
            str(img.get("face_count")),
            reasons or "-",
        )
    console.print(table)


def typer_echo(text: str) -> None:
    print(text)
