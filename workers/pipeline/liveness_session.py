"""``liveness_check``: frames submitted to a liveness session, decided together.

The session (shared/db/liveness_sessions.py) must exist with this nonce, belong to the
job's user (if it has one), be open, unexpired and have attempts left; otherwise the job
fails with its own code (``session_not_found``, ``session_user_mismatch``,
``session_used``, ``session_expired``, ``session_attempts_exhausted``), and during the
user's cool-down with ``too_many_attempts``. Every decided submission (live, spoof,
faces_differ, quality_failed) uses one of the session's attempts; frames that cannot be
read fail the job with the image's code and use none.

The frames are decided by the rule of ``workers.pipeline.liveness_rule`` (the same face
in every frame, the median spoof score against the channel's threshold); the result
carries the decision and reason codes, and the attempt, the session's new state, the
per-user attempt count and an audit entry (raw scores are kept there) commit with the
job's outcome.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import psycopg

from shared.db import liveness_sessions as session_repo
from shared.db.audit import append_audit
from shared.db.calibrations import active_thresholds
from shared.db.liveness_sessions import LivenessSession, SessionStatus
from shared.errors import ErrorCode, FaceauthError, TransientError
from shared.quality_codes import QualityReasonCode
from shared.schemas import LivenessCheckRequest
from workers.job_runner import JobContext, Outcome
from workers.pipeline.attempts import count_decision, refuse_during_cooldown
from workers.pipeline.liveness_rule import Frame, SessionDecision, decide_session
from workers.pipeline.probe import ImageReport, StageTimer, check_images

_SPOOF = str(QualityReasonCode.SPOOF_SUSPECTED)
_MESSAGES = {
    SessionDecision.SPOOF: "possible presentation attack",
    SessionDecision.FACES_DIFFER: "the frames do not all show the same person",
    SessionDecision.QUALITY_FAILED: "every frame needs exactly one clear face (see frames)",
}


def session_for_frames(session: LivenessSession | None, request: LivenessCheckRequest) -> None:
    """Raise the code that says why ``session`` takes no frames from ``request``."""
    if session is None or not session.nonce_matches(request.nonce):
        # One code for both: a wrong nonce must not tell a guesser the session exists.
        raise FaceauthError(ErrorCode.SESSION_NOT_FOUND, "no such liveness session")
    if session.user_id != request.user_id:
        raise FaceauthError(
            ErrorCode.SESSION_USER_MISMATCH,
            "the session belongs to another user (or to none)",
            session_user_id=session.user_id,
        )
    if session.status in (SessionStatus.PASSED, SessionStatus.CONSUMED):
        raise FaceauthError(ErrorCode.SESSION_USED, "the session is already decided")
    if session.status is SessionStatus.FAILED or session.attempts_left <= 0:
        raise FaceauthError(
            ErrorCode.SESSION_ATTEMPTS_EXHAUSTED,
            f"the session's {session.max_attempts} attempt(s) are used up; start a new one",
            max_attempts=session.max_attempts,
        )
    if session.expired:
        raise FaceauthError(
            ErrorCode.SESSION_EXPIRED,
            "the session expired; start a new one",
            expired_at=session.expires_at.isoformat(),
        )


def _usable(report: ImageReport) -> bool:
    """One face passing quality; a spoof suspicion is the whole submission's question."""
    if report.face is None or report.error_code:
        return False
    return all(reason["code"] == _SPOOF for reason in report.reasons)


def _frame_view(report: ImageReport, similarity: float | None) -> dict[str, Any]:
    out = report.to_dict()
    # The per-frame spoof verdict is not the decision (the median is): keep its score in
    # the liveness block, drop the per-frame spoof reason and pass flag it implied.
    out["reasons"] = [r for r in report.reasons if r["code"] != _SPOOF]
    out["passed"] = _usable(report)
    if similarity is not None:
        out["similarity_to_reference"] = round(similarity, 6)
    return out


def liveness_check(request: LivenessCheckRequest, ctx: JobContext) -> Outcome:
    rt = ctx.runtime
    settings = rt.settings
    n = len(request.image_keys)
    if n < 1:
        raise FaceauthError(ErrorCode.TOO_FEW_IMAGES, "a liveness check needs at least 1 frame")
    if n > settings.liveness_session_max_frames:
        raise FaceauthError(
            ErrorCode.TOO_MANY_IMAGES,
            f"a liveness check takes at most {settings.liveness_session_max_frames} frames,"
            f" got {n}",
            maximum=settings.liveness_session_max_frames,
            received=n,
        )
    pack = rt.face_pack()
    with rt.pool.connection() as conn:
        session = session_repo.get_session(conn, request.session_id)
        session_for_frames(session, request)
        assert session is not None
        if session.user_id is not None:
            refuse_during_cooldown(conn, session.user_id)
        thresholds = active_thresholds(
            conn,
            pack.model_version,
            default_low=settings.verify_t_low,
            default_high=settings.verify_t_high,
        )
    if rt.liveness() is None:
        raise FaceauthError(
            ErrorCode.LIVENESS_MODEL_INVALID,
            "liveness sessions need a deployed liveness model (FACEAUTH_LIVENESS_MODEL_DIR)",
        )

    timer = StageTimer()
    reports, liveness = check_images(
        rt, list(request.image_keys), liveness=True, timer=timer, channel=session.channel
    )
    unreadable = [r for r in reports if r.error_code]
    if unreadable:
        # Bad input: no attempt is used and nothing is counted (see workers/pipeline/attempts).
        first = unreadable[0]
        raise FaceauthError(
            ErrorCode(first.error_code or ErrorCode.IMAGE_UNDECODABLE),
            f"{len(unreadable)} frame(s) could not be read",
            images=[r.to_dict() for r in reports],
        )
    usable = [_usable(r) for r in reports]
    embeddings: list[Any] = [None] * n
    if all(usable):
        t = time.perf_counter()
        embeddings = list(pack.embed([r.embed_input() for r in reports]))
        timer.add("align_embed", t)
    frames = [
        Frame(
            image_key=r.image_key,
            usable=ok,
            spoof_score=(r.liveness or {}).get("spoof_score"),
            det_score=float(r.quality.get("det_score", 0.0)),
            sharpness=float(r.quality.get("blur", 0.0)),
            embedding=None if e is None else np.asarray(e, dtype=np.float32),
        )
        for r, ok, e in zip(reports, usable, embeddings, strict=True)
    ]
    spoof_threshold = float(liveness["threshold"])
    verdict = decide_session(
        frames, same_person_min=thresholds.t_low, spoof_threshold=spoof_threshold
    )
    probe_key = reports[verdict.probe].image_key if verdict.probe is not None else None
    sims: list[float | None] = [None] * n
    if verdict.similarities is not None:
        sims = list(verdict.similarities)
    reasons = [{"code": code, "message": _MESSAGES[verdict.decision]} for code in verdict.reasons]
    result: dict[str, Any] = {
        "session_id": str(session.session_id),
        "user_id": session.user_id,
        "decision": str(verdict.decision),
        "passed": verdict.passed,
        "reasons": reasons,
        "probe_image_key": probe_key,
        # liveness: the model, threshold and calibration that decided, and the aggregated
        # score (``spoof_score``: stripped for non-admin keys like every raw score).
        "liveness": {
            **liveness,
            "aggregate": "upper_median",
            "spoof_score": None if verdict.spoof_score is None else round(verdict.spoof_score, 6),
        },
        "same_person": {
            "threshold": thresholds.t_low,
            "threshold_source": thresholds.as_dict()["source"],
            "reference_frame": None
            if verdict.medoid is None
            else reports[verdict.medoid].image_key,
            "face_model_version": pack.model_version,
        },
        "frames": [_frame_view(r, s) for r, s in zip(reports, sims, strict=True)],
    }

    def write(conn: psycopg.Connection) -> None:
        updated = session_repo.record_attempt(
            conn,
            session.session_id,
            job_id=ctx.job_id,
            passed=verdict.passed,
            probe_image_key=probe_key,
            frame_keys=list(request.image_keys),
            decision=str(verdict.decision),
            reasons=verdict.reasons,
        )
        if updated is None:
            # Another attempt decided it, used its last attempt, or it expired meanwhile:
            # the retry reads the session again and fails with the code that says which.
            raise TransientError(ErrorCode.SESSION_RACE, "the session changed meanwhile")
        result["session"] = {
            "status": str(updated.status),
            "attempts": updated.attempts,
            "max_attempts": updated.max_attempts,
            "attempts_left": updated.attempts_left,
            "expires_at": updated.expires_at.isoformat(),
        }
        cooldown = None
        if session.user_id is not None:
            failed = (
                True if verdict.decision.about_the_person else (False if verdict.passed else None)
            )
            cooldown = count_decision(
                conn,
                settings,
                user_id=session.user_id,
                job_id=ctx.job_id,
                failed=failed,
                what=f"liveness_check:{verdict.decision}",
            )
        if cooldown is not None:
            result["cooldown"] = {"started": True, "retry_after": cooldown["retry_after"]}
        append_audit(
            conn,
            event="liveness_check",
            user_id=session.user_id,
            job_id=ctx.job_id,
            details={
                "session_id": str(session.session_id),
                "decision": str(verdict.decision),
                "reasons": verdict.reasons,
                "attempt": updated.attempts,
                "session_status": str(updated.status),
                "n_frames": n,
                "spoof_score": verdict.spoof_score,
                "frame_spoof_scores": [f.spoof_score for f in frames],
                "liveness_threshold": spoof_threshold,
                "liveness_calibration_id": liveness.get("calibration_id"),
                "liveness_model_version": liveness.get("model_version"),
                "channel": session.channel,
                "similarities": verdict.similarities,
                "same_person_threshold": thresholds.t_low,
                "face_model_version": pack.model_version,
            },
        )

    return Outcome(result=result, write=write, stage_seconds=timer.seconds)
