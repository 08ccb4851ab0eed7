"""Apply the versioned SQL files in ``shared/db/schema`` once each, in order; grant access.

Migrations run as the **owner role** (``FACEAUTH_MIGRATION_DATABASE_URL``, else
``FACEAUTH_DATABASE_URL``): it owns the schema objects. The application role
(``FACEAUTH_DB_APP_ROLE``, used by workers, producers and the CLI) owns nothing; after
the files are applied, ``apply_migrations`` (re)grants it exactly what it needs, so a
table added by a later migration is covered too (see ``grant_app_role``).

Safe to run concurrently: a session advisory lock serialises runners and each file
commits with its version row in one transaction. A file edited after it was applied is
an error (its checksum no longer matches), never silently re-run. Workers do not
migrate: they only check, read-only, that the schema is current (``pending_migrations``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

_LOCK_KEY = 0x46414345  # "FACE": any constant shared by all runners
_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_SCHEMA = "public"
# Tables the application role may read but never change.
READ_ONLY_TABLES = frozenset({"schema_migrations"})
# Tables the application role may read and append to, but never update or delete from.
APPEND_ONLY_TABLES = frozenset({"audit_log"})
# SECURITY DEFINER functions (owned by the owner role) the application role may call.
APP_FUNCTIONS = (
    "faceauth_ensure_hnsw_index(text, integer)",
    "faceauth_ensure_search_index(text, integer, text)",
)
_DML = "SELECT, INSERT, UPDATE, DELETE"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    pass


def load_migrations() -> list[Migration]:
    folder = resources.files("shared.db").joinpath("schema")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return found


def _applied(conn: psycopg.Connection) -> dict[int, str] | None:
    """version -> checksum of the applied migrations; None when there is no version table."""
    exists = conn.execute("SELECT to_regclass('public.schema_migrations')").fetchone()
    if exists is None or exists[0] is None:
        return None
    rows = conn.execute("SELECT version, checksum FROM public.schema_migrations").fetchall()
    return {int(v): str(c) for v, c in rows}


def _check_unchanged(migration: Migration, done: dict[int, str]) -> None:
    if done[migration.version] != migration.checksum:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name} changed after "
            "it was applied; add a new migration instead"
        )


def pending_migrations(dsn: str) -> list[Migration]:
    """Migrations not applied yet (read-only: any role that may read the schema can ask).

    Raises ``MigrationError`` when an applied file was edited afterwards.
    """
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        done = _applied(conn) or {}
    pending: list[Migration] = []
    for migration in load_migrations():
        if migration.version in done:
            _check_unchanged(migration, done)
        else:
            pending.append(migration)
    return pending


def apply_migrations(dsn: str, *, app_role: str | None = None) -> list[int]:
    """Bring the database to the newest schema; return the versions applied now.

    ``dsn`` must be the owner role's. With ``app_role``, the role's privileges are
    (re)applied afterwards when it exists (``grant_app_role``).
    """
    applied_now: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            done = _applied(conn)
            if done is None:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS public.schema_migrations ("
                    " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = {}
            for migration in load_migrations():
                if migration.version in done:
                    _check_unchanged(migration, done)
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO public.schema_migrations (version, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                log.info("applied migration %04d_%s", migration.version, migration.name)
                applied_now.append(migration.version)
            if app_role:
                grant_app_role(conn, app_role)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def grant_app_role(conn: psycopg.Connection, app_role: str) -> bool:
    """Give ``app_role`` what the application needs and nothing more; idempotent.

    Runs as the owner role. USAGE on the schema; SELECT/INSERT/UPDATE/DELETE on the
    tables, except SELECT only on ``READ_ONLY_TABLES`` and SELECT/INSERT only on
    ``APPEND_ONLY_TABLES``; USAGE/SELECT on sequences; EXECUTE on ``APP_FUNCTIONS``;
    default privileges so tables the owner creates later are covered before the next
    run. Returns False (and grants nothing) when the role does not exist or is the
    current role (a single-role deployment: revoking would strip the owner itself).
    """
    row = conn.execute(
        "SELECT rolsuper, rolname = current_user FROM pg_roles WHERE rolname = %s", (app_role,)
    ).fetchone()
    if row is None:
        log.warning("application role %r does not exist: no privileges granted", app_role)
        return False
    if row[1]:
        log.warning(
            "migrations run as the application role %r: set FACEAUTH_MIGRATION_DATABASE_URL"
            " to the owner role's DSN for least privilege",
            app_role,
        )
        return False
    if row[0]:
        log.warning("application role %r is a superuser: privileges do not limit it", app_role)
    role = sql.Identifier(app_role)
    schema = sql.Identifier(_SCHEMA)
    tables = [
        str(r[0])
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p')"
            " AND pg_has_role(current_user, c.relowner, 'USAGE') ORDER BY c.relname",
            (_SCHEMA,),
        ).fetchall()
    ]
    statements: list[sql.Composed] = [
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(str(conn.info.dbname)), role
        ),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT {} ON TABLES TO {}").format(
            schema, sql.SQL(_DML), role
        ),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT USAGE, SELECT ON SEQUENCES TO {}"
        ).format(schema, role),
    ]
    for table in tables:
        name = sql.Identifier(_SCHEMA, table)
        # Start from nothing, so a privilege granted by hand (or by an older version of
        # this function) does not survive.
        statements.append(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(name, role))
        if table in READ_ONLY_TABLES:
            allowed = "SELECT"
        elif table in APPEND_ONLY_TABLES:
            allowed = "SELECT, INSERT"
        else:
            allowed = _DML
        statements.append(
            sql.SQL("GRANT {} ON TABLE {} TO {}").format(sql.SQL(allowed), name, role)
        )
    statements.append(
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(schema, role)
    )
    for signature in APP_FUNCTIONS:
        exists = conn.execute("SELECT to_regprocedure(%s)", (f"{_SCHEMA}.{signature}",)).fetchone()
        if exists is not None and exists[0] is not None:
            statements.append(
                sql.SQL("GRANT EXECUTE ON FUNCTION {}.{} TO {}").format(
                    schema, sql.SQL(signature), role
                )
            )
    owns_schema = conn.execute(
        "SELECT pg_has_role(current_user, nspowner, 'USAGE') FROM pg_namespace WHERE nspname = %s",
        (_SCHEMA,),
    ).fetchone()
    if owns_schema is not None and owns_schema[0]:
        # PostgreSQL < 15 lets every role create objects in public.
        statements.append(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(schema))
    with conn.transaction():
        for statement in statements:
            conn.execute(statement)
    log.info("privileges of application role %r applied to %d table(s)", app_role, len(tables))
    return True
