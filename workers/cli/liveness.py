"""``faceauth liveness score IMAGE...``: score the largest face of each image for liveness.

Exit status: 0 when every image got a live/spoof decision, 2 when at least one entry is
an error (missing file, undecodable image, no face; the other images are still scored),
1 when the liveness model or the face pack cannot be loaded (nothing is scored).
Click's own usage errors also exit with 2.

Faces are found with the workers' ``FacePack`` (its SCRFD detector), the same loader the
enrollment and verification pipelines use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from shared.config import get_settings
from workers.cli.liveness_eval import register as register_evaluation
from workers.cli.liveness_models import load_models

if TYPE_CHECKING:
    from workers.inference.face_pack import FacePack
    from workers.inference.liveness import LivenessScorer


EXIT_OK = 0
EXIT_LOAD_FAILED = 1
EXIT_SOME_ERRORS = 2

app = typer.Typer(help="Liveness (presentation-attack) scoring.", no_args_is_help=True)


@app.callback()
def _liveness_group() -> None:
    """Liveness (presentation-attack) scoring."""
    # A callback keeps ``score`` a sub-command even while it is the only one.


# evaluate, calibrations, activate: ISO/IEC 30107-3 evaluation and per-channel thresholds.
register_evaluation(app)


def score_image(
    path: Path,
    scorer: LivenessScorer,
    pack: FacePack,
    *,
    threshold: float,
    max_bytes: int,
    max_pixels: int,
) -> dict[str, Any]:
    """One output entry: a decision, or ``{"path", "error": {"code", "message"}}``.

    The face is the largest one the pack's detector finds (``FacePack.detect`` returns the
    largest box first).
    """
    from shared.errors import ErrorCode, FaceauthError
    from shared.imaging import decode_image

    entry: dict[str, Any] = {"path": str(path)}
    try:
        if not path.is_file():
            raise FaceauthError(ErrorCode.IMAGE_NOT_FOUND, f"no such file: {path}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FaceauthError(ErrorCode.IMAGE_NOT_FOUND, f"cannot read {path}: {exc}") from exc
        image = decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels).pixels
        faces = pack.detect(image)
        if not faces:
            raise FaceauthError(ErrorCode.NO_FACE, "no face detected")
    except FaceauthError as exc:
        entry["error"] = {"code": str(exc.code), "message": exc.message}
        return entry
    face = faces[0]
    result = scorer.score(image, [list(face.bbox)])[0]
    entry.update(
        spoof_score=result.spoof_score,
        live_probability=result.live_probability,
        decision="spoof" if result.is_spoof(threshold) else "live",
        threshold=threshold,
        model_name=result.model_name,
        model_version=result.model_version,
        faces=len(faces),
        bbox=[round(v, 1) for v in face.bbox],
        det_score=round(face.det_score, 4),
        members={m.file: m.live_probability for m in result.members},
    )
    return entry


@app.command("score")
def score(
    images: Annotated[list[Path], typer.Argument(help="image files to score")],
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False,
    model_dir: Annotated[
        Path | None,
        typer.Option("--model-dir", help="liveness model folder [FACEAUTH_LIVENESS_MODEL_DIR]"),
    ] = None,
    face_pack: Annotated[
        Path | None,
        typer.Option(
            "--face-pack", help="InsightFace pack with the detector [FACEAUTH_FACE_PACK_DIR]"
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            min=0.0,
            max=1.0,
            help="spoof score above which a face is 'spoof' [FACEAUTH_LIVENESS_THRESHOLD]",
        ),
    ] = None,
) -> None:
    """Score the largest face of each IMAGE: spoof score (1 = spoof) and live/spoof decision."""
    settings = get_settings()
    scorer, pack = load_models(model_dir, face_pack)  # exits 1 when either cannot load
    limit = settings.liveness_threshold if threshold is None else threshold
    entries = [
        score_image(
            path,
            scorer,
            pack,
            threshold=limit,
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
        )
        for path in images
    ]
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
    else:
        _print_table(entries)
    if any("error" in e for e in entries):
        raise typer.Exit(EXIT_SOME_ERRORS)


def _print_table(entries: list[dict[str, Any]]) -> None:
    table = Table(title="Liveness")
    table.add_column("image", overflow="fold")  # full paths: they are what users copy
    table.add_column("spoof score", justify="right")
    table.add_column("decision")
    table.add_column("model")
    for e in entries:
        if "error" in e:
            table.add_row(e["path"], "-", f"[yellow]{e['error']['code']}[/]", "-")
            continue
        colour = "red" if e["decision"] == "spoof" else "green"
        table.add_row(
            e["path"],
            f"{e['spoof_score']:.4f}",
            f"[{colour}]{e['decision']}[/]",
            f"{e['model_name']} {e['model_version']}",
        )
    Console().print(table)


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(EXIT_LOAD_FAILED)
