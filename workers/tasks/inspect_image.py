"""``faceauth.inspect_image``: fetch one image by reference, decode it, count its faces.

The smallest job that crosses every part of the system (queue, S3, decoder,
detector, Postgres); operators use it to check a deployment end to end.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Task

from shared.schemas import InspectImageRequest, JobKind, TaskName
from workers.celery_app import app
from workers.job_runner import JobContext, Outcome, run_job


def inspect(request: InspectImageRequest, ctx: JobContext) -> Outcome:
    t0 = time.perf_counter()
    image = ctx.runtime.fetch_image(request.image_key)
    t1 = time.perf_counter()
    faces = ctx.runtime.face_pack().detect(image.pixels)
    t2 = time.perf_counter()
    return Outcome(
        result={
            "image_key": request.image_key,
            "format": image.format,
            "width": image.width,
            "height": image.height,
            "n_bytes": image.n_bytes,
            "face_count": len(faces),
            "faces": [
                {
                    "bbox": [round(float(v), 1) for v in face.bbox],
                    "det_score": round(float(face.det_score), 4),
                }
                for face in faces
            ],
        },
        stage_seconds={"fetch_decode": t1 - t0, "detect": t2 - t1},
    )


@app.task(bind=True, name=str(TaskName.INSPECT_IMAGE))
def inspect_image(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return run_job(self, JobKind.INSPECT_IMAGE, args, kwargs, inspect)
