"""Per-image stages shared by every job: fetch, decode, detect, quality gate, liveness.

Each image ends as an ``ImageReport``: either one usable face with its metrics,
or the list of reasons it is unusable, each with a stable code, the measured
value and the threshold, so a client can tell the user "too dark" rather
than "error".
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shared.db.liveness_calibrations import LivenessThreshold, active_liveness_threshold
from shared.errors import FaceauthError
from shared.quality_codes import QualityReasonCode

if TYPE_CHECKING:
    from workers.inference.face_pack import DetectedFace, FacePack
    from workers.runtime import WorkerRuntime


@dataclass
class ImageReport:
    image_key: str
    passed: bool = False
    reasons: list[dict[str, Any]] = field(default_factory=list)
    quality: dict[str, Any] = field(default_factory=dict)
    face_count: int | None = None
    liveness: dict[str, Any] | None = None
    error_code: str | None = None
    # Not serialised: the decoded pixels and the chosen face, kept for embedding.
    pixels: npt.NDArray[np.uint8] | None = None
    face: DetectedFace | None = None

    def embed_input(self) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
        """(pixels, 5-point landmarks) of the one usable face, for alignment and embedding."""
        if self.pixels is None or self.face is None:
            raise RuntimeError(f"{self.image_key}: no usable face to embed")
        return self.pixels, self.face.kps

    def face_bbox(self) -> tuple[float, float, float, float]:
        if self.face is None:
            raise RuntimeError(f"{self.image_key}: no usable face")
        return self.face.bbox

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "image_key": self.image_key,
            "passed": self.passed,
            "reasons": self.reasons,
            "face_count": self.face_count,
            "quality": self.quality,
        }
        if self.liveness is not None:
            out["liveness"] = self.liveness
        return out


@dataclass
class StageTimer:
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - started
        return now


def check_images(
    rt: WorkerRuntime,
    keys: list[str],
    *,
    liveness: bool,
    timer: StageTimer,
    pack: FacePack | None = None,
    det_size: int | None = None,
    channel: str | None = None,
) -> tuple[list[ImageReport], dict[str, Any]]:
    """Run the per-image gates on every key; return reports and a liveness summary.

    ``pack`` defaults to the worker's current face pack; verification passes the pack of
    the model version the user's templates were made with. ``det_size`` overrides the
    detector input side (probes: FACEAUTH_PROBE_DET_SIZE). ``channel`` names the capture
    channel: its active liveness calibration, if any, sets the spoof threshold.
    """
    from workers.inference.quality import QualityGate, assess_image

    pack = pack or rt.face_pack()
    gate = QualityGate(rt.settings)
    reports: list[ImageReport] = []
    for key in keys:
        report = ImageReport(image_key=key)
        reports.append(report)
        t = time.perf_counter()
        try:
            image = rt.fetch_image(key)
        except FaceauthError as exc:
            if exc.transient:
                raise
            report.error_code = str(exc.code)
            report.reasons.append({"code": str(exc.code), "message": exc.message})
            timer.add("decode", t)
            continue
        t = timer.add("decode", t)
        faces = pack.detect(image.pixels, det_size=det_size)
        t = timer.add("detect", t)
        assessment = assess_image(image.pixels, faces, gate)
        timer.add("quality", t)
        report.face_count = len(faces)
        report.reasons.extend(r.model_dump(mode="json") for r in assessment.reasons)
        if assessment.metrics is not None:
            report.quality = assessment.metrics.model_dump(mode="json")
        report.passed = assessment.passed
        if len(faces) == 1:
            report.pixels, report.face = image.pixels, faces[0]
    summary = _score_liveness(rt, reports, enabled=liveness, timer=timer, channel=channel)
    return reports, summary


def _score_liveness(
    rt: WorkerRuntime,
    reports: list[ImageReport],
    *,
    enabled: bool,
    timer: StageTimer,
    channel: str | None = None,
) -> dict[str, Any]:
    from workers.inference.quality import QualityReason

    if not enabled:
        return {"checked": False, "reason": "disabled for this job"}
    scorer = rt.liveness()
    if scorer is None:
        return {"checked": False, "reason": "no liveness model deployed"}
    decided = _liveness_threshold(rt, channel, scorer.version)
    threshold = decided.threshold
    todo = [r for r in reports if r.face is not None and r.pixels is not None]
    t = time.perf_counter()
    items = [(r.embed_input()[0], r.face_bbox()) for r in todo]
    scores = scorer.score_many(items) if items else []
    timer.add("liveness", t)
    for report, score in zip(todo, scores, strict=True):
        report.liveness = {
            "spoof_score": round(float(score.spoof_score), 6),
            "threshold": threshold,
            "model_name": scorer.name,
            "model_version": scorer.version,
            "calibration_id": decided.as_dict()["calibration_id"],
        }
        report.quality["spoof_score"] = report.liveness["spoof_score"]
        if score.spoof_score > threshold:
            report.passed = False
            reason = QualityReason(
                code=QualityReasonCode.SPOOF_SUSPECTED,
                value=round(float(score.spoof_score), 4),
                threshold=threshold,
                message=f"possible presentation attack: spoof score "
                f"{score.spoof_score:.3f} > {threshold}",
            )
            report.reasons.append(reason.model_dump(mode="json"))
    return {
        "checked": True,
        "model_name": scorer.name,
        "model_version": scorer.version,
        **decided.as_dict(),
    }


def liveness_audit(summary: dict[str, Any]) -> dict[str, Any]:
    """Audit fields naming what decided liveness: the channel and its calibration, if any."""
    return {
        "liveness_channel": summary.get("channel"),
        "liveness_threshold": summary.get("threshold"),
        "liveness_calibration_id": summary.get("calibration_id"),
        "liveness_threshold_source": summary.get("threshold_source"),
    }


def _liveness_threshold(
    rt: WorkerRuntime, channel: str | None, model_version: str
) -> LivenessThreshold:
    """The channel's active liveness calibration for this model, else the configured default."""
    default = rt.settings.liveness_threshold
    if channel is None:  # no query: most jobs name no channel
        return LivenessThreshold(default, None, None, "settings")
    with rt.pool.connection() as conn:
        return active_liveness_threshold(
            conn, channel=channel, model_version=model_version, default=default
        )


__all__ = ["ImageReport", "QualityReasonCode", "StageTimer", "check_images", "liveness_audit"]
