"""Calibration over photos on disk (CLI) or over the enrolled database (the IO-queue job)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import psycopg

from shared.calibration import CalibrationReport, SkipImage, build_report, calibrate_directory
from shared.config import Settings
from shared.db import templates as template_repo
from shared.db.calibrations import save_calibration
from shared.errors import ErrorCode, FaceauthError
from shared.imaging import decode_image
from shared.schemas import CalibrateRequest
from workers.job_runner import JobContext, Outcome

if TYPE_CHECKING:
    from workers.inference.face_pack import FacePack

MAX_IMPOSTOR_PAIRS = 1_000_000  # beyond this, a reproducible sample (seeded)


def image_embedder(
    pack: FacePack, settings: Settings
) -> Callable[[Path], npt.NDArray[np.float32] | SkipImage]:
    """The enrollment gates, then one embedding; an unusable photo is skipped with its reason."""
    from workers.inference.quality import QualityGate, assess_image

    gate = QualityGate(settings)

    def embed(path: Path) -> npt.NDArray[np.float32] | SkipImage:
        try:
            image = decode_image(
                path.read_bytes(),
                max_bytes=settings.max_image_bytes,
                max_pixels=settings.max_image_pixels,
            )
        except FaceauthError as exc:
            return SkipImage(exc.message, str(exc.code), codes=(str(exc.code),))
        faces = pack.detect(image.pixels)
        assessment = assess_image(image.pixels, faces, gate)
        if not assessment.passed:
            reasons = "; ".join(r.message for r in assessment.reasons)
            codes = tuple(str(r.code) for r in assessment.reasons)
            return SkipImage(reasons, codes[0], codes=codes)
        return pack.embed([(image.pixels, faces[0].kps)])[0]

    return embed


def calibrate_photos(root: Path, pack: FacePack, settings: Settings) -> CalibrationReport:
    return calibrate_directory(
        root,
        image_embedder(pack, settings),
        model_name=pack.model_name,
        model_version=pack.model_version,
        max_pairs=MAX_IMPOSTOR_PAIRS,
    )


def calibrate_enrolled(conn: psycopg.Connection, *, model_version: str) -> CalibrationReport:
    """Genuine/impostor scores from the active per-image templates of every enrolled user."""
    rows = template_repo.image_templates_of_version(conn, model_version)
    by_user: dict[str, list[npt.NDArray[np.float32]]] = defaultdict(list)
    names: dict[str, list[str]] = defaultdict(list)
    model_name = ""
    for user_id, template_id, embedding, name in rows:
        by_user[user_id].append(embedding)
        names[user_id].append(str(template_id))
        model_name = name
    return build_report(
        {u: np.stack(v) for u, v in by_user.items()},
        model_name=model_name,
        model_version=model_version,
        item_names=names,
        source="database",
        max_pairs=MAX_IMPOSTOR_PAIRS,
    )


RAW_FIELDS = {
    "genuine_scores",
    "genuine_pairs",
    "impostor_scores",
    "impostor_pairs",
    "mean_template_impostor_scores",
    "mean_template_pairs",
    "items",
}


def stored_summary(report: CalibrationReport) -> dict[str, Any]:
    """The report without its raw score lists, which can run to millions of pairs.

    The database row keeps every threshold, rate and statistic; the full report (with
    the raw lists) is the JSON file the CLI writes.
    """
    data: dict[str, Any] = json.loads(report.to_json())
    return {k: v for k, v in data.items() if k not in RAW_FIELDS}


# --- the faceauth.calibrate job (IO queue: needs no model, only stored templates) -------


def calibrate_job(request: CalibrateRequest, ctx: JobContext) -> Outcome:
    with ctx.runtime.pool.connection() as conn:
        version = request.model_version or template_repo.active_model_version(conn)
        if version is None:
            raise FaceauthError(
                ErrorCode.CALIBRATION_INSUFFICIENT_DATA, "no model version is registered yet"
            )
        report = calibrate_enrolled(conn, model_version=version)
        summary = stored_summary(report)
        calibration_id = save_calibration(
            conn,
            model_version=version,
            t_low=report.t_low,
            t_high=report.t_high,
            report=summary,
            activate=request.activate,
        )
    return Outcome(
        result={
            "calibration_id": str(calibration_id),
            "active": request.activate,
            **{k: summary[k] for k in ("model_version", "t_low", "t_high", "eer", "roc_auc")},
            "counts": summary["counts"],
            "fmr_targets": json.loads(json.dumps(summary["fmr_targets"])),
        }
    )
