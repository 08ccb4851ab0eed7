"""Celery tasks, one module per job kind. Importing this package registers them all."""

from workers.tasks import (
    calibrate,
    delete_user,
    enroll,
    inspect_image,
    quality_scan,
    reembed,
    retention,
    verify,
)

__all__ = [
    "calibrate",
    "delete_user",
    "enroll",
    "inspect_image",
    "quality_scan",
    "reembed",
    "retention",
    "verify",
]
