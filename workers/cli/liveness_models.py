"""The models the liveness commands score with: the liveness model and the pack's detector."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from shared.config import get_settings

if TYPE_CHECKING:
    from workers.inference.face_pack import FacePack
    from workers.inference.liveness import LivenessScorer

EXIT_LOAD_FAILED = 1


def load_models(model_dir: Path | None, face_pack: Path | None) -> tuple[LivenessScorer, FacePack]:
    """The liveness model and the face pack's detector; exit 1 with the reason if either fails.

    Heavy imports (ONNX Runtime, InsightFace) only here: ``faceauth --help`` imports this
    module too.
    """
    from shared.errors import ModelLoadError
    from workers.inference.face_pack import FacePack
    from workers.inference.liveness import LivenessScorer

    settings = get_settings()
    folder = model_dir or settings.liveness_model_dir
    if folder is None:
        _fail("no liveness model: pass --model-dir or set FACEAUTH_LIVENESS_MODEL_DIR")
    try:
        scorer = LivenessScorer.load(folder)
        # The detector's own cut is the quality gate's min_det_score: faces below it are
        # not candidates for "the largest face".
        pack = FacePack.load(
            face_pack or settings.face_pack_dir,
            det_size=settings.face_det_size,
            providers=settings.ort_providers,
            det_thresh=settings.min_det_score,
        )
    except ModelLoadError as exc:
        _fail(f"{exc.code}: {exc.message}")
    return scorer, pack


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(EXIT_LOAD_FAILED)
