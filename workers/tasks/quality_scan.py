"""``faceauth.quality_scan``: every quality metric of stored images, without enrolling."""

from __future__ import annotations

from typing import Any

from celery import Task

from shared.errors import FaceauthError
from shared.schemas import JobKind, QualityScanRequest, TaskName
from workers.celery_app import app
from workers.job_runner import JobContext, Outcome, run_job
from workers.quality_scan import QualityRow, assess_one


def scan(request: QualityScanRequest, ctx: JobContext) -> Outcome:
    from workers.inference.quality import QualityGate

    rt = ctx.runtime
    pack = rt.face_pack()
    gate = QualityGate(rt.settings)
    rows: list[QualityRow] = []
    for key in request.image_keys:
        try:
            data = rt.store.get(key, max_bytes=rt.settings.max_image_bytes)
        except FaceauthError as exc:
            if exc.transient:
                raise
            rows.append(
                QualityRow(
                    path=key, reasons=str(exc.code), messages=exc.message, error=str(exc.code)
                )
            )
            continue
        rows.append(assess_one(key, data, pack, gate, settings=rt.settings))
    return Outcome(
        result={
            "model_version": pack.model_version,
            "n_images": len(rows),
            "n_passed": sum(r.passed for r in rows),
            "rows": [r.model_dump(mode="json") for r in rows],
        }
    )


@app.task(bind=True, name=str(TaskName.QUALITY_SCAN))
def quality_scan(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return run_job(self, JobKind.QUALITY_SCAN, args, kwargs, scan)
