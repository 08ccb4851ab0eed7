"""Every job kind's Celery task: one base class, each handler bound to its kind once.

The kinds, their stable task names, queues and request models are declared in
``shared.schemas.JOBS``; here each kind gets the handler (all in ``workers/pipeline/``)
that computes its outcome. The worker app imports this module (``include``), and with it
the tasks that are not jobs (``shared.schemas.INTERNAL_TASKS``: webhook delivery).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from celery import Task

from shared.schemas import JOBS, JobKind
from workers.celery_app import app
from workers.job_runner import Handler, run_job
from workers.pipeline.calibration import calibrate_job
from workers.pipeline.deletion import delete_user
from workers.pipeline.enrollment import enroll
from workers.pipeline.identification import identify
from workers.pipeline.inspection import inspect
from workers.pipeline.liveness_session import liveness_check
from workers.pipeline.quality_scan import quality_scan_job
from workers.pipeline.reembed import reembed
from workers.pipeline.retention import apply_retention
from workers.pipeline.verification import verify
from workers.webhook_task import deliver_webhook

INTERNAL = {deliver_webhook.name: deliver_webhook}

HANDLERS: Mapping[JobKind, Handler] = {
    JobKind.INSPECT_IMAGE: inspect,
    JobKind.ENROLL: enroll,
    JobKind.VERIFY: verify,
    JobKind.IDENTIFY: identify,
    JobKind.QUALITY_SCAN: quality_scan_job,
    JobKind.REEMBED: reembed,
    JobKind.DELETE_USER: delete_user,
    JobKind.APPLY_RETENTION: apply_retention,
    JobKind.CALIBRATE: calibrate_job,
    JobKind.LIVENESS_CHECK: liveness_check,
}
if set(HANDLERS) != set(JOBS):
    raise RuntimeError(f"job kinds without a handler: {set(JOBS) - set(HANDLERS)}")


class JobTask(Task):
    """A job kind's task: any call goes through the job runner with the kind's handler.

    It accepts any arguments so that a message with the wrong ones is recorded as
    ``invalid_payload`` by the runner instead of failing in Celery before it.
    """

    kind: ClassVar[JobKind]
    handler: ClassVar[Handler]

    def run(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return run_job(self, self.kind, args, kwargs, type(self).handler)


def _task_class(kind: JobKind, handler: Handler) -> type[JobTask]:
    spec = JOBS[kind]
    attributes = {
        "name": spec.task_name,
        "kind": kind,
        "handler": staticmethod(handler),
        "__doc__": spec.summary,
        "__module__": __name__,
    }
    return type(f"{kind.title().replace('_', '')}Task", (JobTask,), attributes)


TASKS: Mapping[JobKind, Task] = {
    kind: app.register_task(_task_class(kind, handler)()) for kind, handler in HANDLERS.items()
}
