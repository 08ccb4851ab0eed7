"""``DevStack``: Redis + PostgreSQL + S3 + Celery workers + Flower + the HTTP gateway on
loopback, one data dir.

Used by ``faceauth dev up/down``, ``faceauth demo`` and the pytest session fixtures.
Everything the stack writes lives under ``data_dir`` (logs in ``data_dir/logs``),
which ``stop()`` removes unless ``keep_data``. One exception: as root, PostgreSQL's
files live in ``$TMPDIR/faceauth-pg-*`` behind a ``data_dir/postgres`` symlink (see
``PostgresServer``), removed together with ``data_dir``. A failed start keeps
``data_dir`` so its logs can be read.

``start_services()`` applies the schema migrations as the database owner role before it
returns, so workers (which connect as the least-privilege application role and only
check the schema) can start at once.

For ``dev up --detach`` the stack writes a state file (pids, endpoints, keys;
mode 0600) that a later process hands to ``DevStack.stop_from_state``.

Fault injection: ``stop_redis``/``start_redis``/``restart_redis`` and the same for
``postgres`` and ``s3`` stop a server and bring it back on the same port (or socket),
credentials and data, so the endpoints stay valid.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

from deploy.devstack.common import remove_globbed, start_with_port_retries
from deploy.devstack.ports import LOOPBACK, free_port
from deploy.devstack.postgres_server import PG_APP_ROLE, PostgresServer, remove_external_home
from deploy.devstack.processes import ManagedProcess, ProcessRecord, StartupError
from deploy.devstack.redis_server import RedisServer
from deploy.devstack.s3_server import S3Server, new_s3_keys

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_APP = "workers.celery_app:app"
MARKER_FILE = ".faceauth-devstack"
STATE_FORMAT = 1
_WORKER_STOP_TIMEOUT_S = 30.0
_FLOWER_STOP_TIMEOUT_S = 10.0
_GATEWAY_STOP_TIMEOUT_S = 10.0
GATEWAY = "gateway"  # the default gateway's process name (tests may start more, by name)
_PING_EVERY_S = 1.0


class DevStackError(RuntimeError):
    """The stack cannot be started or stopped as asked."""


@dataclass(frozen=True)
class StackEndpoints:
    """How to reach a running stack; ``env()`` is what workers and the CLI read."""

    # redis://:PASSWORD@127.0.0.1:PORT (no database number); repr-free: it holds the password
    redis_url: str = field(repr=False)
    database_url: str  # libpq URI of the application role; unix socket via ?host=/path
    s3_endpoint: str  # 127.0.0.1:PORT
    s3_access_key: str
    s3_secret_key: str = field(repr=False)
    flower_url: str | None = None
    flower_user: str | None = None
    flower_password: str | None = field(default=None, repr=False)
    # libpq URI of the owner role: `faceauth db migrate` and admin work, never workers
    migration_database_url: str | None = None
    gateway_url: str | None = None  # http://127.0.0.1:PORT of the default HTTP gateway

    def broker_url(self) -> str:
        return f"{self.redis_url}/0"

    def result_backend_url(self) -> str:
        return f"{self.redis_url}/1"

    def env(self) -> dict[str, str]:
        out = {
            "FACEAUTH_BROKER_URL": self.broker_url(),
            "FACEAUTH_RESULT_BACKEND_URL": self.result_backend_url(),
            "FACEAUTH_DATABASE_URL": self.database_url,
            "FACEAUTH_S3_ENDPOINT": self.s3_endpoint,
            "FACEAUTH_S3_ACCESS_KEY": self.s3_access_key,
            "FACEAUTH_S3_SECRET_KEY": self.s3_secret_key,
            "FACEAUTH_S3_SECURE": "false",
        }
        if self.migration_database_url is not None:
            out["FACEAUTH_MIGRATION_DATABASE_URL"] = self.migration_database_url
        if self.flower_url is not None and self.flower_user is not None:
            out["FACEAUTH_FLOWER_USER"] = self.flower_user
            out["FACEAUTH_FLOWER_PASSWORD"] = self.flower_password or ""
        return out

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackEndpoints:
        def optional(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            redis_url=str(data["redis_url"]),
            database_url=str(data["database_url"]),
            s3_endpoint=str(data["s3_endpoint"]),
            s3_access_key=str(data["s3_access_key"]),
            s3_secret_key=str(data["s3_secret_key"]),
            flower_url=optional("flower_url"),
            flower_user=optional("flower_user"),
            flower_password=optional("flower_password"),
            migration_database_url=optional("migration_database_url"),
            gateway_url=optional("gateway_url"),
        )


class DevStack:
    """Real servers on loopback with ephemeral ports, from pip-installed binaries."""

    def __init__(
        self,
        data_dir: Path,
        *,
        keep_data: bool = False,
        start_timeout: float = 60.0,
        migrate: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.keep_data = keep_data
        self.migrate = migrate
        self.start_timeout = start_timeout
        self.logs_dir = self.data_dir / "logs"
        self._redis: RedisServer | None = None
        self._postgres: PostgresServer | None = None
        self._s3: S3Server | None = None
        self._endpoints: StackEndpoints | None = None
        self._workers: list[ManagedProcess] = []
        self._flower: ManagedProcess | None = None
        self._gateways: dict[str, ManagedProcess] = {}
        self._owner_pid = os.getpid()
        self._detached = False
        self._stopped = False

    # --- context manager --------------------------------------------------------------------

    def __enter__(self) -> DevStack:
        self.start_services()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.stop()
            return
        try:
            self.stop()
        except DevStackError as cleanup:  # do not mask the error that ended the block
            log.error("%s", cleanup)

    # --- accessors --------------------------------------------------------------------------

    @property
    def endpoints(self) -> StackEndpoints:
        if self._endpoints is None:
            raise DevStackError("the stack is not started; call start_services() first")
        return self._endpoints

    @property
    def workers(self) -> list[ManagedProcess]:
        return list(self._workers)

    @property
    def flower(self) -> ManagedProcess | None:
        return self._flower

    @property
    def gateway(self) -> ManagedProcess | None:
        """The default HTTP gateway's process (its pid: the uvicorn server)."""
        return self._gateways.get(GATEWAY)

    @property
    def postgres(self) -> PostgresServer:
        """The PostgreSQL server (``admin_url``: superuser, ``owner_url``: schema owner)."""
        if self._postgres is None:
            raise DevStackError("the stack is not started")
        return self._postgres

    @property
    def redis(self) -> RedisServer:
        if self._redis is None:
            raise DevStackError("the stack is not started")
        return self._redis

    @property
    def s3(self) -> S3Server:
        if self._s3 is None:
            raise DevStackError("the stack is not started")
        return self._s3

    def processes(self) -> list[ManagedProcess]:
        """Every live process of the stack, in start order (servers, Flower, workers,
        gateways)."""
        procs: list[ManagedProcess] = []
        for service in (self._redis, self._postgres, self._s3):
            if service is not None and service.process is not None:
                procs.append(service.process)
        if self._flower is not None:
            procs.append(self._flower)
        procs.extend(self._workers)
        procs.extend(self._gateways.values())
        return [p for p in procs if p.is_alive()]

    # --- servers ----------------------------------------------------------------------------

    def start_services(self) -> StackEndpoints:
        """Start Redis, PostgreSQL and S3; return their endpoints (fresh S3 keys each time)."""
        if self._endpoints is not None:
            return self._endpoints
        if self._stopped:
            raise DevStackError("this stack was stopped; create a new DevStack")
        self._claim_data_dir()
        atexit.register(self._stop_at_exit)
        started = time.monotonic()
        access_key, secret_key = new_s3_keys()
        timeout = self.start_timeout
        self._redis = RedisServer(self.data_dir / "redis", self.logs_dir, timeout=timeout)
        self._postgres = PostgresServer(self.data_dir / "postgres", self.logs_dir, timeout=timeout)
        self._s3 = S3Server(
            self.data_dir / "s3",
            self.logs_dir,
            access_key=access_key,
            secret_key=secret_key,
            timeout=timeout,
        )
        try:
            self._start_servers(self._redis, self._postgres, self._s3)
            if self.migrate:
                self._apply_migrations(self._postgres)
        except BaseException:
            try:
                # Keep the data dir: its logs explain the failure (the error quotes them).
                self._stop(remove_data=False)
            except DevStackError as cleanup:  # the start failure is the error to report
                log.error("cleanup after failed start: %s", cleanup)
            raise
        self._endpoints = StackEndpoints(
            redis_url=self._redis.url,
            database_url=self._postgres.url,
            s3_endpoint=self._s3.endpoint,
            s3_access_key=access_key,
            s3_secret_key=secret_key,
            migration_database_url=self._postgres.owner_url,
        )
        log.info("dev stack services up in %.1fs (%s)", time.monotonic() - started, self.data_dir)
        return self._endpoints

    @staticmethod
    def _apply_migrations(postgres: PostgresServer) -> None:
        """Schema migrations as the owner role, then the application role's grants."""
        from shared.db.migrations import apply_migrations

        applied = apply_migrations(postgres.owner_url, app_role=PG_APP_ROLE)
        if applied:
            log.info("migrations applied: %s", applied)

    # --- fault injection: stop a server, bring it back on the same endpoint -----------------

    def stop_redis(self) -> None:
        """Stop Redis; ``start_redis()`` brings it back on the same port with its AOF data."""
        self.redis.stop()

    def start_redis(self) -> None:
        self.redis.start()

    def restart_redis(self) -> None:
        self.redis.restart()

    def stop_postgres(self) -> None:
        """Stop PostgreSQL; ``start_postgres()`` brings it back on the same socket and data."""
        self.postgres.stop(keep_socket_dir=True)

    def start_postgres(self) -> None:
        self.postgres.start()

    def restart_postgres(self) -> None:
        self.stop_postgres()
        self.start_postgres()

    def stop_s3(self) -> None:
        """Stop S3; ``start_s3()`` brings it back on the same ports, keys and data."""
        self.s3.stop()

    def start_s3(self) -> None:
        self.s3.start()

    def restart_s3(self) -> None:
        self.s3.restart()

    @staticmethod
    def _start_servers(redis: RedisServer, postgres: PostgresServer, s3: S3Server) -> None:
        """Start PostgreSQL (initdb dominates) in a thread while Redis and S3 start here."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="devstack-postgres") as pool:
            pg_started = pool.submit(postgres.start)
            try:
                redis.start()
                s3.start()
            finally:
                # Never return (and let the caller stop servers) while postgres is starting.
                wait([pg_started])
                pg_error = pg_started.exception()
                if pg_error is not None and sys.exc_info()[0] is not None:
                    log.error("postgres failed to start as well: %s", pg_error)
            pg_started.result()

    def _claim_data_dir(self) -> None:
        """Create ``data_dir``; refuse a non-empty directory that is not a dev stack's.

        ``stop()`` deletes the directory, so it must never be someone's real data.
        """
        marker = self.data_dir / MARKER_FILE
        if self.data_dir.exists() and any(self.data_dir.iterdir()) and not marker.exists():
            raise DevStackError(
                f"{self.data_dir} is not empty and not a dev-stack directory; "
                "choose an empty or new directory"
            )
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text("faceauth dev stack data; removed by `faceauth dev down`\n")

    def versions(self) -> dict[str, str]:
        """Versions of the running servers (and of pgvector)."""
        if self._redis is None or self._postgres is None or self._s3 is None:
            raise DevStackError("the stack is not started")
        return {
            "redis": self._redis.version,
            "postgres": self._postgres.version,
            "pgvector": self._postgres.pgvector_version,
            "seaweedfs": self._s3.version,
        }

    # --- Celery -----------------------------------------------------------------------------

    def _celery_env(self, extra_env: dict[str, str] | None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.endpoints.env())
        # Workers and Flower use the application role only, never the owner's DSN.
        env.pop("FACEAUTH_MIGRATION_DATABASE_URL", None)
        env["PYTHONUNBUFFERED"] = "1"  # log lines reach the log file as they happen
        env.update(extra_env or {})
        return env

    def start_worker(
        self,
        *,
        queues: list[str],
        concurrency: int | None = 1,
        pool: str | None = "prefork",
        extra_env: dict[str, str] | None = None,
        name: str = "worker",
        app: str = DEFAULT_APP,
        timeout: float | None = None,
    ) -> ManagedProcess:
        """Start a Celery worker (prefork, or threads for cross-job batching) on ``queues``.

        ``concurrency``/``pool`` None leave them to the app's configuration
        (FACEAUTH_WORKER_JOBS_IN_FLIGHT, else Celery's defaults).

        Ready = the log shows ``name@host ready.`` or the worker answers a control ping.
        Its log is ``logs/<name>.log`` (appended to when a worker is restarted).
        """
        if not queues:
            raise ValueError("a worker needs at least one queue")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"worker name must be [A-Za-z0-9_.-]+, got {name!r}")
        if any(w.name == name and w.is_alive() for w in self._workers):
            raise DevStackError(f"a worker named {name!r} is already running")
        self._workers = [w for w in self._workers if w.name != name]
        argv = [
            sys.executable, "-m", "celery", "-A", app, "worker",
            "-Q", ",".join(queues),
            *(["-c", str(concurrency)] if concurrency is not None else []),
            *(["--pool", pool] if pool is not None else []),
            "-n", f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "-l", "INFO",
        ]  # fmt: skip
        proc = ManagedProcess.spawn(
            name,
            argv,
            log_path=self.logs_dir / f"{name}.log",
            env=self._celery_env(extra_env),
            cwd=REPO_ROOT,
        )
        self._workers.append(proc)
        probe = _WorkerReadiness(proc, name, self.endpoints.broker_url())
        try:
            proc.wait_ready(
                probe,
                timeout=timeout or self.start_timeout,
                what=f"celery worker {name} reporting ready",
                interval=0.2,
            )
        except BaseException:
            proc.stop(timeout=5)
            raise
        finally:
            probe.close()
        return proc

    def start_flower(
        self,
        *,
        user: str,
        password: str,
        app: str = DEFAULT_APP,
        extra_env: dict[str, str] | None = None,
    ) -> str:
        """Start Flower with basic auth on a loopback port; return its URL once it answers.

        Flower runs under ``deploy.flower_auth``, which puts basic auth in front of every
        route (Flower itself leaves ``/metrics``, ``/healthcheck`` and others open).
        """
        if self._flower is not None and self._flower.is_alive():
            raise DevStackError("flower is already running")
        if not user or ":" in user or not password:
            raise ValueError("flower needs a user without ':' and a non-empty password")
        url_holder: list[str] = []

        def attempt() -> None:
            port = free_port()
            url = f"http://{LOOPBACK}:{port}"
            argv = [
                sys.executable, "-m", "deploy.flower_auth", "-A", app, "flower",
                f"--address={LOOPBACK}", f"--port={port}",
            ]  # fmt: skip
            env = self._celery_env(extra_env)
            # Credentials via Flower's FLOWER_* environment options, not argv: argv is
            # world-readable in /proc and `ps`.
            env["FLOWER_BASIC_AUTH"] = f"{user}:{password}"
            proc = ManagedProcess.spawn(
                "flower", argv, log_path=self.logs_dir / "flower.log", env=env, cwd=REPO_ROOT
            )
            try:
                proc.wait_ready(
                    lambda: _flower_answers(url, user, password),
                    timeout=self.start_timeout,
                    what=f"flower answering on {url}",
                    interval=0.2,
                )
            except BaseException:
                proc.stop(timeout=5)
                raise
            self._flower = proc
            url_holder.append(url)

        start_with_port_retries("flower", attempt)
        url = url_holder[-1]
        self._endpoints = replace(
            self.endpoints, flower_url=url, flower_user=user, flower_password=password
        )
        return url

    # --- HTTP gateway -----------------------------------------------------------------------

    def start_gateway(
        self,
        *,
        name: str = GATEWAY,
        workers: int = 1,
        extra_env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Start the HTTP gateway (``python -m gateway``) on a loopback port; return its URL
        once ``/readyz`` answers 200 (Postgres, Redis and S3 reachable).

        ``name`` tells gateways apart (its log is ``logs/<name>.log``); the default one's
        URL is ``endpoints.gateway_url``. The gateway connects as the application role.
        """
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"gateway name must be [A-Za-z0-9_.-]+, got {name!r}")
        running = self._gateways.get(name)
        if running is not None and running.is_alive():
            raise DevStackError(f"a gateway named {name!r} is already running")
        url_holder: list[str] = []

        def attempt() -> None:
            port = free_port()
            url = f"http://{LOOPBACK}:{port}"
            argv = [
                sys.executable, "-m", "gateway",
                "--host", LOOPBACK, "--port", str(port), "--workers", str(workers),
            ]  # fmt: skip
            proc = ManagedProcess.spawn(
                name,
                argv,
                log_path=self.logs_dir / f"{name}.log",
                env=self._celery_env(extra_env),
                cwd=REPO_ROOT,
            )
            try:
                proc.wait_ready(
                    lambda: _gateway_ready(url),
                    timeout=timeout or self.start_timeout,
                    what=f"gateway answering /readyz on {url}",
                    interval=0.1,
                )
            except BaseException:
                proc.stop(timeout=5)
                raise
            self._gateways[name] = proc
            url_holder.append(url)

        start_with_port_retries(name, attempt)
        url = url_holder[-1]
        if name == GATEWAY:
            self._endpoints = replace(self.endpoints, gateway_url=url)
        return url

    def stop_gateway(self, name: str = GATEWAY) -> None:
        """Stop a gateway started by ``start_gateway`` (a later start picks a new port)."""
        proc = self._gateways.pop(name, None)
        if proc is not None:
            proc.stop(timeout=_GATEWAY_STOP_TIMEOUT_S)
        if name == GATEWAY and self._endpoints is not None:
            self._endpoints = replace(self._endpoints, gateway_url=None)

    # --- stopping ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop gateways, workers, Flower, then S3, PostgreSQL, Redis; remove ``data_dir``
        unless kept.

        Keeps going past failures so one stuck process does not leak the others;
        raises ``DevStackError`` at the end if anything failed.
        """
        self._stop(remove_data=not self.keep_data)

    def _stop(self, *, remove_data: bool) -> None:
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self._stop_at_exit)
        errors: list[str] = []
        # Producers first: a gateway stopped after the servers would answer 503s meanwhile.
        for gateway in self._gateways.values():
            _collect(errors, gateway.name, partial(gateway.stop, _GATEWAY_STOP_TIMEOUT_S))
        for worker in reversed(self._workers):
            _collect(errors, worker.name, partial(worker.stop, _WORKER_STOP_TIMEOUT_S))
        if self._flower is not None:
            flower = self._flower
            _collect(errors, "flower", partial(flower.stop, _FLOWER_STOP_TIMEOUT_S))
        for service in (self._s3, self._postgres, self._redis):
            if service is not None:
                _collect(errors, service.name, service.stop)
        if remove_data:
            external = self._postgres.external_dirs if self._postgres is not None else []
            for home in external:
                _collect(errors, "postgres home", partial(remove_external_home, home))
            _collect(errors, "data dir", partial(_remove_stack_dir, self.data_dir))
        if errors:
            raise DevStackError("dev stack did not stop cleanly: " + "; ".join(errors))

    def _stop_at_exit(self) -> None:
        """Interpreter exit without ``stop()`` (a crashed test session): leave no servers."""
        if os.getpid() != self._owner_pid or self._detached or self._stopped:
            return  # a forked child, or the stack was handed over to a state file
        with contextlib.suppress(Exception):
            self.stop()

    # --- detached mode ----------------------------------------------------------------------

    def write_state(self, path: Path, *, detach: bool = True) -> None:
        """Write pids, endpoints and keys to ``path`` (mode 0600) for ``stop_from_state``.

        With ``detach`` (the default) the stack is handed over: it is not stopped when
        this interpreter exits.
        """
        state = {
            "format": STATE_FORMAT,
            "written_at": datetime.now(UTC).isoformat(),
            "launcher_pid": os.getpid(),
            "data_dir": str(self.data_dir),
            "keep_data": self.keep_data,
            "endpoints": self.endpoints.to_json(),
            "processes": [p.record.to_json() for p in self.processes()],
            "stale_globs": self._s3.stale_socket_globs if self._s3 is not None else [],
            "temp_paths": [str(p) for p in self._postgres.temp_paths] if self._postgres else [],
            "external_dirs": (
                [str(p) for p in self._postgres.external_dirs] if self._postgres else []
            ),
        }
        _write_private_json(Path(path), state)
        if detach:
            self._detached = True

    @classmethod
    def read_state(cls, path: Path) -> dict[str, Any]:
        with Path(path).open(encoding="utf-8") as fh:
            state: dict[str, Any] = json.load(fh)
        if state.get("format") != STATE_FORMAT:
            raise DevStackError(f"{path}: unsupported state format {state.get('format')!r}")
        return state

    @classmethod
    def endpoints_from_state(cls, path: Path) -> StackEndpoints:
        """Endpoints of a detached stack (for ``faceauth dev env`` and friends)."""
        return StackEndpoints.from_json(cls.read_state(path)["endpoints"])

    @classmethod
    def stop_from_state(cls, path: Path) -> None:
        """Stop a stack started by another process; remove its data dir and the state file.

        Processes are stopped newest first (workers, Flower, then servers). A process that
        is already gone, or whose pid now belongs to something else, is skipped.
        """
        path = Path(path)
        state = cls.read_state(path)
        records = [ProcessRecord.from_json(r) for r in state["processes"]]
        errors: list[str] = []
        for record in reversed(records):
            proc = ManagedProcess.from_record(record)
            timeout = _WORKER_STOP_TIMEOUT_S if record.name not in _SERVER_NAMES else 15.0
            _collect(errors, record.name, partial(proc.stop, timeout))
        remove_globbed(list(state.get("stale_globs", [])))
        for temp in state.get("temp_paths", []):
            shutil.rmtree(temp, ignore_errors=True)
        if not state.get("keep_data", False):
            for home in state.get("external_dirs", []):
                _collect(errors, "postgres home", partial(remove_external_home, Path(home)))
            data_dir = Path(state["data_dir"])
            _collect(errors, "data dir", partial(_remove_stack_dir, data_dir))
        if errors:
            raise DevStackError("dev stack did not stop cleanly: " + "; ".join(errors))
        path.unlink(missing_ok=True)


_SERVER_NAMES = frozenset({"redis", "postgres", "s3"})


class _WorkerReadiness:
    """Readiness probe for a Celery worker: its "ready." log line, or a control ping."""

    def __init__(self, proc: ManagedProcess, name: str, broker_url: str) -> None:
        self._proc = proc
        self._nodename = f"{name}@{socket.gethostname()}"
        self._ready_line = re.compile(rf"\b{re.escape(name)}@\S+ ready\.")
        self._broker_url = broker_url
        self._client: Any = None
        self._next_ping = time.monotonic() + _PING_EVERY_S

    def __call__(self) -> bool:
        if self._ready_line.search(self._proc.new_log_text()):
            return True
        if time.monotonic() < self._next_ping:
            return False
        self._next_ping = time.monotonic() + _PING_EVERY_S
        return bool(self._ping())

    def _ping(self) -> list[Any]:
        if self._client is None:
            from celery import Celery

            # A bare client app: the worker's own app module may not be importable here.
            self._client = Celery("devstack-probe", broker=self._broker_url)
        replies: list[Any] = self._client.control.ping(destination=[self._nodename], timeout=0.5)
        return replies

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


def _gateway_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:  # loopback URL
            return bool(response.status == 200)
    except urllib.error.HTTPError:  # 503 while a dependency is still coming up
        return False


def _flower_answers(url: str, user: str, password: str) -> bool:
    token = b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(
        f"{url}/healthcheck", headers={"Authorization": f"Basic {token}"}
    )
    with urllib.request.urlopen(request, timeout=2) as response:  # loopback URL we built
        return bool(response.status == 200)


def _collect(errors: list[str], what: str, action: Callable[[], object]) -> None:
    started = time.monotonic()
    try:
        action()
    except Exception as exc:  # keep stopping the rest; report everything at the end
        log.error("stopping %s failed: %s", what, exc)
        errors.append(f"{what}: {exc}")
    else:
        log.debug("stopped %s in %.2fs", what, time.monotonic() - started)


def _remove_stack_dir(data_dir: Path) -> None:
    if not data_dir.exists():
        return
    if not (data_dir / MARKER_FILE).exists():
        raise DevStackError(f"refusing to delete {data_dir}: no {MARKER_FILE} marker")
    shutil.rmtree(data_dir)


def _write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON readable by the owner only, atomically (the file holds S3 keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def iter_state_processes(path: Path) -> Iterator[ManagedProcess]:
    """Handles on the processes named in a state file (for status displays)."""
    for record in DevStack.read_state(path)["processes"]:
        yield ManagedProcess.from_record(ProcessRecord.from_json(record))


__all__ = [
    "DEFAULT_APP",
    "DevStack",
    "DevStackError",
    "StackEndpoints",
    "StartupError",
    "iter_state_processes",
]
