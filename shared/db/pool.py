"""One psycopg connection pool per process, with the pgvector adapter registered.

Celery's prefork pool forks after the parent imports this module, so the pool
is built lazily in the child on first use (a pool inherited across fork would
share sockets between processes).
"""

from __future__ import annotations

import os
import threading

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

from shared.config import Settings

_lock = threading.Lock()
_pool: ConnectionPool | None = None
_pool_pid: int | None = None
_pool_dsn: str | None = None


def _configure(conn: psycopg.Connection) -> None:
    register_vector(conn)


def get_pool(settings: Settings) -> ConnectionPool:
    global _pool, _pool_pid, _pool_dsn
    dsn = settings.database_dsn()
    with _lock:
        if _pool is not None and (_pool_pid != os.getpid() or _pool_dsn != dsn):
            if _pool_pid == os.getpid():
                _pool.close()
            _pool = None
        if _pool is None:
            _pool = ConnectionPool(
                dsn,
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
                configure=_configure,
                # A connection is checked before it is handed out, so one that a database
                # restart closed is replaced instead of failing the next statement.
                check=ConnectionPool.check_connection,
                open=True,
                timeout=15,
                name="faceauth",
            )
            _pool_pid, _pool_dsn = os.getpid(), dsn
        return _pool


def close_pool() -> None:
    global _pool
    with _lock:
        if _pool is not None and _pool_pid == os.getpid():
            _pool.close()
        _pool = None
