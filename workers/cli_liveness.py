"""``faceauth liveness score IMAGE...``: score the largest face of each image for liveness.

Exit status: 0 when every image got a live/spoof decision, 2 when at least one entry is
an error (missing file, undecodable image, no face; the other images are still scored),
1 when the liveness model or the face detector cannot be loaded (nothing is scored).
Click's own usage errors also exit with 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import numpy as np
import numpy.typing as npt
import typer
from rich.console import Console
from rich.table import Table

from shared.config import get_settings
from shared.errors import ErrorCode, FaceauthError, ModelLoadError
from shared.imaging import decode_image

if TYPE_CHECKING:
    from workers.inference.liveness import LivenessScorer


EXIT_OK = 0
EXIT_LOAD_FAILED = 1
EXIT_SOME_ERRORS = 2

app = typer.Typer(help="Liveness (presentation-attack) scoring.", no_args_is_help=True)


@app.callback()
def _liveness_group() -> None:
    """Liveness (presentation-attack) scoring."""
    # A callback keeps ``score`` a sub-command even while it is the only one.


class FaceBoxDetector:
    """The SCRFD detector of an InsightFace model pack, used only to find face boxes."""

    def __init__(self, model: Any, path: Path) -> None:
        self._model = model
        self.path = path

    @classmethod
    def load(
        cls, face_pack: Path, *, det_size: int, min_score: float, providers: list[str] | None = None
    ) -> FaceBoxDetector:
        # Heavy imports (insightface, onnxruntime) only when detecting: the ``faceauth``
        # entry point imports this module for --help too.
        from insightface.model_zoo import get_model

        from workers.inference.onnx_session import CUDA_PROVIDER, resolve_providers

        candidates = sorted(face_pack.glob("det_*.onnx")) if face_pack.is_dir() else []
        if len(candidates) != 1:
            raise ModelLoadError(
                ErrorCode.MODEL_PACK_INVALID,
                f"face pack {face_pack}: expected exactly one det_*.onnx detector, found "
                f"{[p.name for p in candidates]}",
                face_pack=str(face_pack),
            )
        wanted = resolve_providers(providers)
        try:
            model = get_model(str(candidates[0]), providers=wanted)
            model.prepare(
                ctx_id=0 if CUDA_PROVIDER in wanted else -1,
                input_size=(det_size, det_size),
                det_thresh=min_score,
            )
        except Exception as exc:  # insightface/ORT raise assorted types for a broken file
            raise ModelLoadError(
                ErrorCode.MODEL_PACK_INVALID,
                f"cannot load face detector {candidates[0]}: {exc}",
                face_pack=str(face_pack),
            ) from exc
        return cls(model, candidates[0])

    def detect(self, image_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """(N, 5) rows ``x1, y1, x2, y2, score``."""
        boxes, _ = self._model.detect(image_bgr, max_num=0)
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 5)


def largest_face(boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32] | None:
    """The row of the largest box by area, or None when there is none."""
    if boxes.shape[0] == 0:
        return None
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[int(np.argmax(areas))]


def score_image(
    path: Path,
    scorer: LivenessScorer,
    detector: FaceBoxDetector,
    *,
    threshold: float,
    max_bytes: int,
    max_pixels: int,
) -> dict[str, Any]:
    """One output entry: a decision, or ``{"path", "error": {"code", "message"}}``."""
    entry: dict[str, Any] = {"path": str(path)}
    try:
        if not path.is_file():
            raise FaceauthError(ErrorCode.IMAGE_NOT_FOUND, f"no such file: {path}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FaceauthError(ErrorCode.IMAGE_NOT_FOUND, f"cannot read {path}: {exc}") from exc
        image = decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels).pixels
        boxes = detector.detect(image)
        face = largest_face(boxes)
        if face is None:
            raise FaceauthError(ErrorCode.NO_FACE, "no face detected")
    except FaceauthError as exc:
        entry["error"] = {"code": str(exc.code), "message": exc.message}
        return entry
    result = scorer.score(image, [[float(v) for v in face[:4]]])[0]
    entry.update(
        spoof_score=result.spoof_score,
        live_probability=result.live_probability,
        decision="spoof" if result.is_spoof(threshold) else "live",
        threshold=threshold,
        model_name=result.model_name,
        model_version=result.model_version,
        faces=int(boxes.shape[0]),
        bbox=[round(float(v), 1) for v in face[:4]],
        det_score=round(float(face[4]), 4),
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
    from workers.inference.liveness import LivenessScorer

    settings = get_settings()
    folder = model_dir or settings.liveness_model_dir
    if folder is None:
        _fail("no liveness model: pass --model-dir or set FACEAUTH_LIVENESS_MODEL_DIR")
    try:
        scorer = LivenessScorer.load(folder)
        detector = FaceBoxDetector.load(
            face_pack or settings.face_pack_dir,
            det_size=settings.face_det_size,
            min_score=settings.min_det_score,
        )
    except ModelLoadError as exc:
        _fail(f"{exc.code}: {exc.message}")
    limit = settings.liveness_threshold if threshold is None else threshold
    entries = [
        score_image(
            path,
            scorer,
            detector,
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
