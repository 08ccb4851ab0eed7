"""``faceauth.calibrate``: thresholds from the enrolled database, stored as a calibration.

Runs on the IO queue: it needs no model, only the stored templates.
"""

from __future__ import annotations

import json
from typing import Any

from celery import Task

from shared.db import templates as template_repo
from shared.db.calibrations import save_calibration
from shared.errors import ErrorCode, FaceauthError
from shared.schemas import CalibrateRequest, JobKind, TaskName
from workers.calibration_jobs import calibrate_enrolled, stored_summary
from workers.celery_app import app
from workers.job_runner import JobContext, Outcome, run_job


def calibrate(request: CalibrateRequest, ctx: JobContext) -> Outcome:
    with ctx.runtime.pool.connection() as conn:
        version = request.model_version or template_repo.active_model_version(conn)
        if version is None:
            raise FaceauthError(
                ErrorCode.CALIBRATION_INSUFFICIENT_DATA, "no model version is registered yet"
            )
        report = calibrate_enrolled(conn, model_version=version)
        summary = stored_summary(report)
        calibration_id = save_calibration(
            conn,
            model_version=version,
            t_low=report.t_low,
            t_high=report.t_high,
            report=summary,
            activate=request.activate,
        )
    return Outcome(
        result={
            "calibration_id": str(calibration_id),
            "active": request.activate,
            **{k: summary[k] for k in ("model_version", "t_low", "t_high", "eer", "roc_auc")},
            "counts": summary["counts"],
            "fmr_targets": json.loads(json.dumps(summary["fmr_targets"])),
        }
    )


@app.task(bind=True, name=str(TaskName.CALIBRATE))
def calibrate_task(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return run_job(self, JobKind.CALIBRATE, args, kwargs, calibrate)
