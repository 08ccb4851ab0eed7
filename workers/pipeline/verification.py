"""1:1 verification: a probe photo against one user's active templates.

Two thresholds make three decisions: ``reject`` below T_low, ``accept`` at or
above T_high, ``step_up`` (ask for another factor) in between. A probe that
fails quality or liveness gets its own decision and reasons instead of a
score. Every decision is appended to the audit log without the embedding.

A verification may name a passed liveness session (``liveness_session_id``): its probe
is then the session's recorded frame, the face that was proven live, and liveness is not
scored again; the session is used up in the verification's own transaction, so it backs
at most one. Reject and liveness_failed count toward the user's cool-down, accept resets
it (workers/pipeline/attempts.py).
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg

from shared.db import liveness_sessions as session_repo
from shared.db import templates as template_repo
from shared.db.audit import append_audit
from shared.db.calibrations import ActiveThresholds, active_thresholds
from shared.db.liveness_sessions import LivenessSession, SessionStatus
from shared.db.templates import StoredTemplate
from shared.errors import ErrorCode, FaceauthError, TransientError
from shared.quality_codes import QualityReasonCode
from shared.schemas import VerifyRequest
from workers.job_runner import JobContext, Outcome
from workers.pipeline.attempts import count_decision, refuse_during_cooldown
from workers.pipeline.probe import ImageReport, StageTimer, check_images, liveness_audit

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


# Decisions about the person that count toward a cool-down (True) or reset it (False).
_COUNTS: dict[Decision, bool] = {
    Decision.REJECT: True,
    Decision.LIVENESS_FAILED: True,
    Decision.ACCEPT: False,
}


def session_probe(session: LivenessSession | None, request: VerifyRequest) -> str:
    """The probe key of the passed session ``request`` names; raise why it may not back it."""
    if session is None:
        raise FaceauthError(ErrorCode.SESSION_NOT_FOUND, "no such liveness session")
    if session.user_id is not None and session.user_id != request.user_id:
        raise FaceauthError(
            ErrorCode.SESSION_USER_MISMATCH, "the liveness session is another user's"
        )
    if session.status is SessionStatus.CONSUMED:
        raise FaceauthError(
            ErrorCode.SESSION_USED, "the liveness session already backed a verification"
        )
    if session.expired:
        raise FaceauthError(ErrorCode.SESSION_EXPIRED, "the liveness session expired")
    if session.status is not SessionStatus.PASSED or session.probe_image_key is None:
        raise FaceauthError(
            ErrorCode.SESSION_NOT_PASSED,
            f"the liveness session is {session.status}, not passed",
            session_status=str(session.status),
        )
    if request.image_key is not None and request.image_key != session.probe_image_key:
        raise FaceauthError(
            ErrorCode.INVALID_PAYLOAD,
            "with liveness_session_id, image_key must be omitted (or be the session's frame)",
        )
    return session.probe_image_key


def verify(request: VerifyRequest, ctx: JobContext) -> Outcome:
    started = time.perf_counter()
    rt = ctx.runtime
    session: LivenessSession | None = None
    probe_key = request.image_key
    with rt.pool.connection() as conn:
        refuse_during_cooldown(conn, request.user_id)
        if request.liveness_session_id is not None:
            session = session_repo.get_session(conn, request.liveness_session_id)
            probe_key = session_probe(session, request)
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

    assert probe_key is not None  # the request names an image or a session
    timer = StageTimer()
    (report,), liveness = check_images(
        rt,
        [probe_key],
        # The session's frame was proven live with the others of its submission.
        liveness=request.liveness and session is None,
        timer=timer,
        pack=pack,
        det_size=rt.settings.probe_det_size,
        channel=request.channel,
    )
    result: dict[str, Any] = {
        "user_id": request.user_id,
        "model_name": pack.model_name,
        "model_version": pack.model_version,
        "thresholds": thresholds.as_dict(),
        "liveness": liveness,
        "probe": report.to_dict(),
    }
    if session is not None:
        result["liveness"] = {
            "checked": True,
            "source": "liveness_session",
            "liveness_session_id": str(session.session_id),
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
        if session is not None and (
            session_repo.consume(
                conn, session.session_id, job_id=ctx.job_id, user_id=request.user_id
            )
            is None
        ):
            # Another verification used it (or it expired) meanwhile: the retry reads the
            # session again and fails with the code that says which.
            raise TransientError(ErrorCode.SESSION_RACE, "the liveness session changed meanwhile")
        cooldown = count_decision(
            conn,
            rt.settings,
            user_id=request.user_id,
            job_id=ctx.job_id,
            failed=_COUNTS.get(decision),
            what=f"verify:{decision}",
        )
        if cooldown is not None:
            result["cooldown"] = {"started": True, "retry_after": cooldown["retry_after"]}
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
                **liveness_audit(liveness),
                "liveness_session_id": str(session.session_id) if session else None,
                "reasons": [r["code"] for r in report.reasons],
                "latency_ms": latency_ms,
            },
        )

    return Outcome(result=result, write=write, stage_seconds=timer.seconds)
