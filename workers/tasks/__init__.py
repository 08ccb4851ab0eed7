"""Celery tasks, one module per job kind. Importing this package registers them all."""

from workers.tasks import enroll, inspect_image, verify

__all__ = ["enroll", "inspect_image", "verify"]
