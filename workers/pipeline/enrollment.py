"""Enrollment: 1–3 photos of one person → per-image templates plus a mean template.

All images must pass every gate or nothing is stored; the result lists each
image's verdict either way. The writes (templates, enrollment row, audit
entry, job status) commit together in the job runner's transaction.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

import numpy as np
import numpy.typing as npt
import psycopg

from shared.db import templates as template_repo
from shared.db.audit import append_audit
from shared.errors import ErrorCode, FaceauthError
from shared.quality_codes import QualityReasonCode
from shared.schemas import EnrollRequest, JobStatus
from workers.job_runner import JobContext, Outcome
from workers.pipeline.probe import ImageReport, StageTimer, check_images

if TYPE_CHECKING:
    from workers.inference.face_pack import FacePack


def l2_normalise(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norm = float(np.linalg.norm(v))
    return (v / norm).astype(np.float32) if norm > 0 else v.astype(np.float32)


def store_templates(
    conn: psycopg.Connection,
    pack: FacePack,
    *,
    enrollment_id: UUID,
    user_id: str,
    templates: list[template_repo.NewTemplate],
    liveness_checked: bool,
    duplicate_of: list[dict[str, Any]],
    search_index: str = "vector",
) -> list[UUID]:
    """Register the pack's model version (and its index) and write one enrollment's rows."""
    template_repo.ensure_model_version(
        conn,
        model_name=pack.model_name,
        model_version=pack.model_version,
        embedding_dim=pack.embedding_dim,
        search_index=search_index,
    )
    return template_repo.write_enrollment(
        conn,
        enrollment_id=enrollment_id,
        user_id=user_id,
        model_name=pack.model_name,
        model_version=pack.model_version,
        templates=templates,
        liveness_checked=liveness_checked,
        duplicate_of=duplicate_of,
    )


def _reject(
    code: ErrorCode, message: str, reports: list[ImageReport], timer: StageTimer, **extra: Any
) -> Outcome:
    err = FaceauthError(code, message, images=[r.to_dict() for r in reports], **extra)
    return Outcome(
        result=err.to_dict(), status=JobStatus.FAILED, error=err, stage_seconds=dict(timer.seconds)
    )


def gate_failure(reports: list[ImageReport], timer: StageTimer) -> Outcome | None:
    failed = [r for r in reports if not r.passed]
    if not failed:
        return None
    image_errors = [r.error_code for r in failed if r.error_code]
    if image_errors:
        # A bad reference (missing object, not an image, ...) is reported with its own
        # code so producers can tell "fix your upload" from "take another photo".
        code = ErrorCode(image_errors[0])
        return _reject(code, f"{len(image_errors)} image(s) could not be read", reports, timer)
    # A suspected presentation attack outranks quality problems (it is a fraud signal).
    any_spoof = any(
        reason["code"] == QualityReasonCode.SPOOF_SUSPECTED for r in failed for reason in r.reasons
    )
    if any_spoof:
        return _reject(
            ErrorCode.LIVENESS_REJECTED,
            f"{len(failed)} image(s) look like a presentation attack",
            reports,
            timer,
        )
    return _reject(
        ErrorCode.QUALITY_REJECTED,
        f"{len(failed)} of {len(reports)} image(s) failed the quality gate",
        reports,
        timer,
    )


def enroll(request: EnrollRequest, ctx: JobContext) -> Outcome:
    settings = ctx.runtime.settings
    n = len(request.image_keys)
    if n < settings.enroll_min_images:
        raise FaceauthError(
            ErrorCode.TOO_FEW_IMAGES,
            f"enrollment needs at least {settings.enroll_min_images} image(s), got {n}",
            minimum=settings.enroll_min_images,
            received=n,
        )
    if n > settings.enroll_max_images:
        raise FaceauthError(
            ErrorCode.TOO_MANY_IMAGES,
            f"enrollment takes at most {settings.enroll_max_images} image(s), got {n}",
            maximum=settings.enroll_max_images,
            received=n,
        )

    timer = StageTimer()
    reports, liveness = check_images(
        ctx.runtime,
        list(request.image_keys),
        liveness=request.liveness,
        timer=timer,
        channel=request.channel,
    )
    failure = gate_failure(reports, timer)
    if failure is not None:
        return failure

    pack = ctx.runtime.face_pack()
    t = time.perf_counter()
    embeddings = pack.embed([r.embed_input() for r in reports])
    timer.add("align_embed", t)

    pair_scores = [
        {"a": i, "b": j, "similarity": round(float(embeddings[i] @ embeddings[j]), 4)}
        for i, j in itertools.combinations(range(n), 2)
    ]
    low = [p for p in pair_scores if p["similarity"] < settings.enroll_same_person_min_similarity]
    if low:
        return _reject(
            ErrorCode.MIXED_IDENTITIES,
            "the enrollment images do not all show the same person",
            reports,
            timer,
            pair_similarities=pair_scores,
            threshold=settings.enroll_same_person_min_similarity,
        )

    mean = l2_normalise(embeddings.mean(axis=0))
    similarity_to_mean = [round(float(e @ mean), 4) for e in embeddings]
    duplicates = _duplicate_candidates(
        ctx, request.user_id, mean, pack.model_version, pack.embedding_dim
    )
    if duplicates and settings.duplicate_action == "reject":
        return _reject(
            ErrorCode.DUPLICATE_IDENTITY,
            "this face is already enrolled under another user id",
            reports,
            timer,
            duplicate_of=duplicates,
        )

    enrollment_id: UUID = ctx.job_id
    new_templates = [
        template_repo.NewTemplate(
            embedding=emb,
            is_mean_template=False,
            quality=report.quality,
            source_image_key=report.image_key,
        )
        for emb, report in zip(embeddings, reports, strict=True)
    ]
    new_templates.append(
        template_repo.NewTemplate(
            embedding=mean,
            is_mean_template=True,
            quality={"n_sources": n, "similarity_to_sources": similarity_to_mean},
            source_image_key=None,
        )
    )
    result: dict[str, Any] = {
        "user_id": request.user_id,
        "enrollment_id": str(enrollment_id),
        "model_name": pack.model_name,
        "model_version": pack.model_version,
        "embedding_dim": pack.embedding_dim,
        "images": [r.to_dict() for r in reports],
        "pair_similarities": pair_scores,
        "mean_similarity_to_sources": similarity_to_mean,
        "liveness": liveness,
        "duplicate_of": duplicates,
        "templates": [],
    }

    def write(conn: psycopg.Connection) -> None:
        t0 = time.perf_counter()
        ids = store_templates(
            conn,
            pack,
            enrollment_id=enrollment_id,
            user_id=request.user_id,
            templates=new_templates,
            liveness_checked=bool(liveness.get("checked")),
            duplicate_of=duplicates,
            search_index=settings.search_index,
        )
        result["templates"] = [
            {
                "template_id": str(tid),
                "is_mean_template": tpl.is_mean_template,
                "source_image_key": tpl.source_image_key,
            }
            for tid, tpl in zip(ids, new_templates, strict=True)
        ]
        append_audit(
            conn,
            event="enrolled",
            user_id=request.user_id,
            job_id=ctx.job_id,
            details={
                "model_version": pack.model_version,
                "n_images": n,
                "liveness": liveness,
                "duplicate_of": duplicates,
            },
        )
        timer.add("db_write", t0)

    return Outcome(result=result, write=write, stage_seconds=timer.seconds)


def _duplicate_candidates(
    ctx: JobContext, user_id: str, mean: npt.NDArray[np.float32], model_version: str, dim: int
) -> list[dict[str, Any]]:
    """Other users whose active mean template is above the duplicate threshold."""
    settings = ctx.runtime.settings
    with ctx.runtime.pool.connection() as conn, conn.transaction():
        hits = template_repo.search_mean_templates(
            conn,
            mean,
            model_version=model_version,
            embedding_dim=dim,
            top_k=settings.duplicate_max_matches,
            ef_search=settings.hnsw_ef_search,
            exclude_user=user_id,
            rerank_candidates=settings.search_rerank_candidates,
        )
    return [
        {"user_id": h.user_id, "similarity": round(h.score, 4)}
        for h in hits
        if h.score >= settings.duplicate_threshold
    ]
