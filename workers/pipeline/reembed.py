"""Model migration: re-embed a user's stored source images with the current model version.

The new templates are written beside the old ones (the old version's rows stay active),
so verification can switch per user the moment their new templates exist, and the old
version keeps serving everyone else until the operator activates the new one.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import psycopg

from shared.db import templates as template_repo
from shared.db.audit import append_audit
from shared.errors import ErrorCode, FaceauthError
from shared.schemas import ReembedRequest
from workers.job_runner import JobContext, Outcome
from workers.pipeline.enrollment import gate_failure, l2_normalise, store_templates
from workers.pipeline.probe import StageTimer, check_images


def reembed(request: ReembedRequest, ctx: JobContext) -> Outcome:
    rt = ctx.runtime
    pack = rt.face_pack()
    with rt.pool.connection() as conn:
        templates = template_repo.active_templates(conn, request.user_id)
    if any(t.model_version == pack.model_version for t in templates):
        return Outcome(
            result={
                "user_id": request.user_id,
                "model_version": pack.model_version,
                "status": "already_current",
            }
        )
    sources = [t for t in templates if not t.is_mean_template and t.source_image_key]
    if not sources:
        raise FaceauthError(
            ErrorCode.NO_TEMPLATES_FOR_MODEL,
            f"user {request.user_id!r} has no stored source images to re-embed",
            user_id=request.user_id,
        )
    # The newest enrollment's images (a user may still hold several old versions).
    newest = max(sources, key=lambda t: t.created_at).model_version
    keys = [t.source_image_key for t in sources if t.model_version == newest]
    timer = StageTimer()
    # Liveness was judged when the photos were first enrolled; re-judging them with a
    # changed liveness model must not silently drop users from the migration.
    reports, _ = check_images(rt, [k for k in keys if k], liveness=False, timer=timer, pack=pack)
    failure = gate_failure(reports, timer)
    if failure is not None:
        return failure
    t = time.perf_counter()
    embeddings = pack.embed([r.embed_input() for r in reports])
    timer.add("align_embed", t)
    mean = l2_normalise(embeddings.mean(axis=0))
    new = [
        template_repo.NewTemplate(emb, False, r.quality, r.image_key)
        for emb, r in zip(embeddings, reports, strict=True)
    ]
    new.append(
        template_repo.NewTemplate(
            mean, True, {"n_sources": len(reports), "reembedded_from": newest}, None
        )
    )
    result: dict[str, Any] = {
        "user_id": request.user_id,
        "model_version": pack.model_version,
        "from_model_version": newest,
        "n_images": len(reports),
        "status": "reembedded",
        "mean_similarity_to_sources": [round(float(np.dot(e, mean)), 4) for e in embeddings],
    }

    def write(conn: psycopg.Connection) -> None:
        store_templates(
            conn,
            pack,
            enrollment_id=ctx.job_id,
            user_id=request.user_id,
            templates=new,
            liveness_checked=False,
            duplicate_of=[],
            search_index=ctx.runtime.settings.search_index,
        )
        append_audit(
            conn,
            event="reembedded",
            user_id=request.user_id,
            job_id=ctx.job_id,
            details={"from": newest, "to": pack.model_version, "n_images": len(reports)},
        )

    return Outcome(result=result, write=write, stage_seconds=timer.seconds)
