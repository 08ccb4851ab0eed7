"""``faceauth quality scan DIR``: run the enrollment quality gate over a folder of photos.

Prints a table (one row per image: faces, metrics, verdict, reasons) and a summary, and
writes the rows to every ``--out`` file (CSV, JSON or Parquet, by suffix or ``--format``).
Nothing is enrolled or stored.

Exit status: 0 when the scan ran (whatever the verdicts), 1 when the face pack cannot be
loaded or an output cannot be written; click's usage errors exit with 2.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from shared.config import get_settings

if TYPE_CHECKING:
    from workers.inference.face_pack import FacePack
    from workers.pipeline.quality_scan import QualityRow

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1

app = typer.Typer(help="Quality scan of photos, without enrolling.", no_args_is_help=True)


@app.callback()
def _quality_group() -> None:
    """Quality scan of photos, without enrolling."""
    # A callback keeps ``scan`` a sub-command even while it is the only one.


@app.command("scan")
def scan(
    directory: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, dir_okay=True, help="folder of images to scan"
        ),
    ],
    out: Annotated[
        list[Path] | None,
        typer.Option("--out", "-o", help="write the rows here (.csv, .json, .parquet); repeatable"),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", "-f", help="csv, json or parquet for every --out (default: by suffix)"
        ),
    ] = None,
    face_pack: Annotated[
        Path | None,
        typer.Option("--face-pack", help="InsightFace model pack [FACEAUTH_FACE_PACK_DIR]"),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive/--no-recursive", help="descend into sub-folders")
    ] = True,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="show a progress bar")
    ] = True,
    table: Annotated[bool, typer.Option("--table/--no-table", help="print the table")] = True,
) -> None:
    """Detect faces in every image under DIRECTORY and apply the quality gate to each."""
    # Heavy imports (ONNX Runtime, the face pack) only when scanning: ``faceauth --help``
    # imports this module too.
    from shared.errors import ModelLoadError
    from workers.inference.face_pack import FacePack, get_face_pack
    from workers.inference.quality import QualityGate
    from workers.pipeline.quality_scan import (
        output_format,
        parquet_unavailable,
        render_table,
        scan_directory,
        write_rows,
    )

    outputs = list(out or [])
    # Refuse a bad suffix, or a format this environment cannot write, before the scan.
    try:
        formats = {output_format(path, fmt) for path in outputs}
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--out/--format") from exc
    if "parquet" in formats and (problem := parquet_unavailable()) is not None:
        _fail(f"cannot write Parquet: {problem}")

    settings = get_settings()
    try:
        pack = (
            FacePack.load(
                face_pack, det_size=settings.face_det_size, providers=settings.ort_providers
            )
            if face_pack is not None
            else get_face_pack(settings)
        )
    except ModelLoadError as exc:
        _fail(f"{exc.code}: {exc.message}")
    gate = QualityGate(settings)

    rows = scan_directory(directory, pack, gate, progress, recursive=recursive, settings=settings)
    console = Console()
    if table:
        console.print(render_table(rows, title=f"Quality scan of {directory}"))
    console.print(_summary(rows, pack))
    for path in outputs:
        try:
            write_rows(rows, path, fmt)
        except OSError as exc:
            _fail(f"cannot write {path}: {exc}")
        console.print(f"wrote {len(rows)} rows to {path}")


def _summary(rows: list[QualityRow], pack: FacePack) -> str:
    from workers.pipeline.quality_scan import reason_counts

    passed = sum(row.passed for row in rows)
    counts = reason_counts(rows)
    reasons = ", ".join(f"{code} {n}" for code, n in counts.most_common()) or "none"
    return (
        f"{len(rows)} images, {passed} passed, {len(rows) - passed} refused "
        f"(reasons: {reasons}); model {pack.model_version}"
    )


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(EXIT_FAILED)
