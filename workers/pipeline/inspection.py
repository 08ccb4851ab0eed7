"""The ``faceauth.inspect_image`` job: fetch one image by reference, decode it, count its faces.

The smallest job that crosses every part of the system (queue, S3, decoder,
detector, Postgres); operators use it to check a deployment end to end.
"""

from __future__ import annotations

import time

from shared.schemas import InspectImageRequest
from workers.job_runner import JobContext, Outcome


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
