"""1:N identification: the top-k enrolled users most similar to a probe.

Searches the HNSW index of the active mean templates of the worker's model
version with pgvector's iterative index scan, which keeps walking the graph until
the filtered query has its rows: no count of the gallery, no exact re-run.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from shared.db import templates as template_repo
from shared.db.audit import append_audit
from shared.db.calibrations import active_thresholds
from shared.schemas import IdentifyRequest
from workers.job_runner import JobContext, Outcome
from workers.pipeline.probe import StageTimer, check_images, liveness_audit
from workers.pipeline.verification import decide, probe_failure_decision


def identify(request: IdentifyRequest, ctx: JobContext) -> Outcome:
    started = time.perf_counter()
    rt = ctx.runtime
    # 1:N searches the active model version's index (switched with `faceauth model
    # activate`); during a migration that may still be the previous pack's version.
    packs = rt.face_packs()
    with rt.pool.connection() as conn:
        active = template_repo.active_model_version(conn)
    pack = packs.get(active or "", rt.face_pack())
    timer = StageTimer()
    (report,), liveness = check_images(
        rt,
        [request.image_key],
        liveness=request.liveness,
        timer=timer,
        pack=pack,
        channel=request.channel,
        det_size=rt.settings.probe_det_size,
    )
    result: dict[str, Any] = {
        "model_name": pack.model_name,
        "model_version": pack.model_version,
        "liveness": liveness,
        "probe": report.to_dict(),
        "candidates": [],
    }
    failure = probe_failure_decision(report)
    if failure is not None:
        result["decision"] = failure
        result["reasons"] = report.reasons
        return Outcome(result=result, stage_seconds=timer.seconds)

    t = time.perf_counter()
    probe = pack.embed([report.embed_input()])[0]
    timer.add("align_embed", t)
    # A request that names no top_k gets the deployment's FACEAUTH_IDENTIFY_TOP_K.
    top_k = request.top_k if request.top_k is not None else rt.settings.identify_top_k
    t = time.perf_counter()
    with rt.pool.connection() as conn:
        thresholds = active_thresholds(
            conn,
            pack.model_version,
            default_low=rt.settings.verify_t_low,
            default_high=rt.settings.verify_t_high,
        )
        hits = template_repo.search_mean_templates(
            conn,
            probe,
            model_version=pack.model_version,
            embedding_dim=pack.embedding_dim,
            top_k=top_k,
            ef_search=rt.settings.hnsw_ef_search,
            rerank_candidates=rt.settings.search_rerank_candidates,
        )
    timer.add("search", t)
    result["candidates"] = [
        {
            "rank": i + 1,
            "user_id": h.user_id,
            "score": round(h.score, 6),
            "decision": decide(h.score, thresholds),
        }
        for i, h in enumerate(hits)
    ]
    top = result["candidates"][0] if result["candidates"] else None
    result["decision"] = "match" if top and top["decision"] == "accept" else "no_match"
    result["search"] = "hnsw"  # iterative index scan (see the module docstring)
    result["thresholds"] = thresholds.as_dict()
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    result["latency_ms"] = latency_ms

    def write(conn: psycopg.Connection) -> None:
        append_audit(
            conn,
            event="identification",
            user_id=top["user_id"] if top else None,
            job_id=ctx.job_id,
            details={
                "decision": result["decision"],
                "candidates": [
                    {"user_id": c["user_id"], "score": c["score"]} for c in result["candidates"]
                ],
                "thresholds": thresholds.as_dict(),
                "face_model_version": pack.model_version,
                "search": "hnsw",
                **liveness_audit(liveness),
                "latency_ms": latency_ms,
            },
        )

    return Outcome(result=result, write=write, stage_seconds=timer.seconds)
