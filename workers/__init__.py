"""Celery workers: the app, its tasks and the inference stages they run."""
