"""1:1 verification: a probe photo against one user's active templates.

Two thresholds make three decisions: ``reject`` below T_low, ``accept`` at or
above T_high, ``step_up`` (ask for another factor) in between. A probe that
fails quality or liveness gets its own decision and reasons instead of a
score. Every decision is appended to the audit log without the embedding.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg

from shared.db import templates as template_repo
from shared.db.audit import append_audit
from shared.db.calibrations import ActiveThresholds, active_thresholds
from shared.db.templates import StoredTemplate
from shared.errors import ErrorCode, FaceauthError
from shared.quality_codes import QualityReasonCode
from shared.schemas import VerifyRequest
from workers.job_runner import JobContext, Outcome
from workers.pipeline.probe import ImageReport, StageTimer, check_images

if TYPE_CHECKING:
    from workers.inference.face_pack import FacePack


class Decision(StrEnum):
    """What a verification (or a 1:N candidate) concluded; results carry the string."""

    ACCEPT = "accept"
    REJECT = "reject"
    STEP_UP = "step_up"
    QUALITY_FAILED = "quality_failed"
    LIVENESS_FAILED = "liveness_failed"


def decide(score: float, thresholds: ActiveThresholds) -> Decision:
    if score >= thresholds.t_high:
        return Decision.ACCEPT
    if score < thresholds.t_low:
        return Decision.REJECT
    return Decision.STEP_UP


def probe_failure_decision(report: ImageReport) -> Decision | None:
    """None when the probe is usable; else the decision that names why it is not."""
    if report.error_code:
        raise FaceauthError(ErrorCode(report.error_code), report.reasons[0]["message"])
    if report.passed:
        return None
    codes = {r["code"] for r in report.reasons}
    # A suspected presentation attack outranks any quality problem: it is the fraud signal
    # the caller must see, even when the attack photo is also badly posed.
    spoof = QualityReasonCode.SPOOF_SUSPECTED in codes
    return Decision.LIVENESS_FAILED if spoof else Decision.QUALITY_FAILED


def choose_pack(
    packs: dict[str, FacePack], templates: list[StoredTemplate], user_id: str
) -> tuple[FacePack, list[StoredTemplate]]:
    """The newest loaded model version the user has templates for.

    During a migration the worker holds the new pack (first) and the old one: a user is
    verified with the new version as soon as their re-embedded templates exist, and with
    the old version until then.
    """
    for version, pack in packs.items():
        mine = [t for t in templates if t.model_version == version]
        if mine:
            return pack, mine
    enrolled = sorted({t.model_version for t in templates})
    raise FaceauthError(
        ErrorCode.MODEL_VERSION_MISMATCH,
        f"user {user_id!r} is enrolled with {enrolled}, the worker runs {list(packs)};"
        " re-embed the user first",
        enrolled_versions=enrolled,
        worker_versions=list(packs),
    )


def verify(request: VerifyRequest, ctx: JobContext) -> Outcome:
    started = time.perf_counter()
    rt = ctx.runtime
    with rt.pool.connection() as conn:
        if not template_repo.user_exists(conn, request.user_id):
            raise FaceauthError(
                ErrorCode.UNKNOWN_USER,
                f"user {request.user_id!r} is not enrolled",
                user_id=request.user_id,
            )
        all_templates = template_repo.active_templates(conn, request.user_id)
        if not all_templates:
            raise FaceauthError(
                ErrorCode.NO_TEMPLATES_FOR_MODEL,
                f"user {request.user_id!r} has no active templates",
                user_id=request.user_id,
            )
        pack, templates = choose_pack(rt.face_packs(), all_templates, request.user_id)
        thresholds = active_thresholds(
            conn,
            pack.model_version,
            default_low=rt.settings.verify_t_low,
            default_high=rt.settings.verify_t_high,
        )

    timer = StageTimer()
    (report,), liveness = check_images(
        rt,
        [request.image_key],
        liveness=request.liveness,
        timer=timer,
        pack=pack,
        det_size=rt.settings.probe_det_size,
    )
    result: dict[str, Any] = {
        "user_id": request.user_id,
        "model_name": pack.model_name,
        "model_version": pack.model_version,
        "thresholds": thresholds.as_dict(),
        "liveness": liveness,
        "probe": report.to_dict(),
    }
    decision = probe_failure_decision(report)
    if decision is None:
        t = time.perf_counter()
        probe = pack.embed([report.embed_input()])[0]
        timer.add("align_embed", t)
        mean = next((t for t in templates if t.is_mean_template), None)
        singles = [t for t in templates if not t.is_mean_template]
        mean_score = float(np.dot(probe, mean.embedding)) if mean is not None else None
        best = max(singles, key=lambda t: float(np.dot(probe, t.embedding)), default=None)
        best_score = float(np.dot(probe, best.embedding)) if best is not None else None
        # The mean template averages out pose and lighting of the enrollment photos, so it
        # is the steadier comparison; the best single template is reported for review.
        decided_by = "mean_template" if mean_score is not None else "best_template"
        score = mean_score if mean_score is not None else best_score
        assert score is not None
        decision = decide(score, thresholds)
        result.update(
            {
                "score": round(score, 6),
                "mean_template_score": None if mean_score is None else round(mean_score, 6),
                "best_template_score": None if best_score is None else round(best_score, 6),
                "best_template_id": str(best.template_id) if best is not None else None,
                "decided_by": decided_by,
            }
        )
    result["decision"] = decision
    result["reasons"] = report.reasons
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    result["latency_ms"] = latency_ms

    def write(conn: psycopg.Connection) -> None:
        append_audit(
            conn,
            event="verification",
            user_id=request.user_id,
            job_id=ctx.job_id,
            details={
                "decision": decision,
                "score": result.get("score"),
                "mean_template_score": result.get("mean_template_score"),
                "best_template_score": result.get("best_template_score"),
                "decided_by": result.get("decided_by"),
                "thresholds": thresholds.as_dict(),
                "face_model_version": pack.model_version,
                "liveness_model_version": liveness.get("model_version"),
                "spoof_score": (report.liveness or {}).get("spoof_score"),
                "reasons": [r["code"] for r in report.reasons],
                "latency_ms": latency_ms,
            },
        )

    return Outcome(result=result, write=write, stage_seconds=timer.seconds)
