#!/bin/sh
# PostgreSQL bootstrap for the compose stack: mounted into /docker-entrypoint-initdb.d of
# the `postgres` service, so the image runs it once, as the superuser (POSTGRES_USER), when
# the data volume is first initialised. Run it again by hand after changing a password or
# to upgrade a volume created before the roles existed (see README, "Deploying with
# Docker Compose"):
#
#   docker compose exec postgres sh /docker-entrypoint-initdb.d/10-faceauth-roles.sh
#
# Least privilege:
#   DB_OWNER_USER  owns the database (hence the `public` schema and every table) and runs
#                  the migrations (`migrate` service); no superuser, no CREATEDB/CREATEROLE.
#   DB_APP_USER    what workers, Flower and producers log in as: owns nothing; the
#                  migration runner grants it DML on the tables, SELECT+INSERT only on
#                  the append-only audit_log, SELECT only on schema_migrations.
# pgvector is not a trusted extension, so the superuser creates it here; the migration's
# `CREATE EXTENSION IF NOT EXISTS vector` is then a no-op.
#
# Every step is idempotent. Passwords reach psql through its environment (\getenv), never
# its command line.
set -eu

: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${POSTGRES_DB:?POSTGRES_DB is required}"
: "${DB_OWNER_USER:?DB_OWNER_USER is required}"
: "${DB_OWNER_PASSWORD:?DB_OWNER_PASSWORD is required}"
: "${DB_APP_USER:?DB_APP_USER is required}"
: "${DB_APP_PASSWORD:?DB_APP_PASSWORD is required}"
export DB_OWNER_USER DB_OWNER_PASSWORD DB_APP_USER DB_APP_PASSWORD POSTGRES_DB

if [ "$DB_OWNER_USER" = "$POSTGRES_USER" ] || [ "$DB_APP_USER" = "$POSTGRES_USER" ] \
    || [ "$DB_OWNER_USER" = "$DB_APP_USER" ]; then
    echo "init-db: the superuser, the owner and the application role must be three roles" >&2
    exit 1
fi

# The entrypoint's temporary server listens on the unix socket only; PGHOST/PGPORT, when
# set, point elsewhere (used by the project's tests).
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\getenv owner DB_OWNER_USER
\getenv owner_password DB_OWNER_PASSWORD
\getenv app DB_APP_USER
\getenv app_password DB_APP_PASSWORD
\getenv db POSTGRES_DB
SELECT format('CREATE ROLE %I', :'owner')
    WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('CREATE ROLE %I', :'app')
    WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app') \gexec
ALTER ROLE :"owner" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'owner_password';
ALTER ROLE :"app" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
    WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
ALTER DATABASE :"db" OWNER TO :"owner";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"owner";
GRANT CONNECT ON DATABASE :"db" TO :"app";
\connect :"db"
CREATE EXTENSION IF NOT EXISTS vector;
-- PostgreSQL >= 15 already keeps PUBLIC from creating objects in public; older ones do not.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
echo "init-db: roles '$DB_OWNER_USER' (owner) and '$DB_APP_USER' (application) ready in '$POSTGRES_DB'"
