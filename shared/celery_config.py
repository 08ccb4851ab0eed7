"""Celery configuration shared by the workers and by producers.

Producers build a Celery client from this without importing any worker code,
so a service that only submits jobs needs neither models nor ONNX Runtime.
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from shared.config import Settings
from shared.schemas import INTERNAL_TASKS, JOBS, JobSpec, QueueRole


def queue_for(spec: JobSpec, settings: Settings) -> str:
    """The queue name a job kind is routed to."""
    return queue_name(spec.queue, settings)


def queue_name(role: QueueRole, settings: Settings) -> str:
    return settings.queue_inference if role is QueueRole.INFERENCE else settings.queue_io


def celery_config(settings: Settings) -> dict[str, Any]:
    return _base_config(settings) | _pool_config(settings)


def _pool_config(settings: Settings) -> dict[str, Any]:
    """Jobs in flight per worker process (FACEAUTH_WORKER_JOBS_IN_FLIGHT).

    Several jobs share one process, and so one set of loaded models and one batcher, only
    in Celery's threads pool; prefork children would each load their own models and never
    see each other's calls. Command-line ``--pool``/``--concurrency`` still win.
    """
    n = settings.worker_jobs_in_flight
    if n is None:
        return {}
    return {"worker_pool": "threads" if n > 1 else "prefork", "worker_concurrency": n}


def _base_config(settings: Settings) -> dict[str, Any]:
    exchange = Exchange("faceauth", type="direct")
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend_url,
        # JSON both ways; pickle is refused even if a producer sends it.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # A task is acknowledged only after it finished, and a worker that dies mid-task
        # gives the message back, so a crash never loses a job.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "task_time_limit": settings.task_time_limit_s,
        "task_soft_time_limit": max(settings.task_time_limit_s - 15, 1),
        "result_expires": 24 * 3600,
        "broker_connection_retry_on_startup": True,
        # Messages of a worker that died (not just its pool child) come back after the
        # visibility timeout; the sweep that finds them runs every few seconds (kombu's
        # default is every ~100 s, which would leave such a job waiting needlessly).
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "unacked_restore_interval": max(1, min(10, settings.broker_visibility_timeout_s // 5)),
            "unacked_restore_throttle": 1,
        },
        "result_backend_transport_options": {"retry_policy": {"timeout": 5.0}},
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_default_queue": settings.queue_io,
        "task_default_exchange": "faceauth",
        "task_queues": (
            Queue(settings.queue_inference, exchange, routing_key=settings.queue_inference),
            Queue(settings.queue_io, exchange, routing_key=settings.queue_io),
        ),
        "task_routes": {
            spec.task_name: {
                "queue": queue_for(spec, settings),
                "routing_key": queue_for(spec, settings),
            }
            for spec in JOBS.values()
        }
        | {
            name: {"queue": queue_name(role, settings), "routing_key": queue_name(role, settings)}
            for name, role in INTERNAL_TASKS.items()
        },
        "worker_hijack_root_logger": False,
    }
