"""Postgres + pgvector: migrations, append-only audit, per-version HNSW index, repositories."""

from __future__ import annotations

import itertools
from uuid import uuid4

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from shared.db import templates as repo
from shared.db.audit import append_audit
from shared.db.migrations import apply_migrations, load_migrations, pending_migrations

from .conftest import LiveStack

pytestmark = pytest.mark.integration


def test_migrations_are_applied_once(live: LiveStack) -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions) and versions[0] == 1
    # the dev stack applied them (as the owner) before the worker started
    assert apply_migrations(live.owner_dsn, app_role=live.settings.db_app_role) == []
    assert pending_migrations(live.settings.database_dsn()) == []  # the worker's check
    rows = live.sql("SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == versions
    ext = live.sql("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    assert ext and str(ext[0][0]).startswith("0.")


def test_audit_log_is_append_only(live: LiveStack) -> None:
    with psycopg.connect(live.settings.database_dsn(), autocommit=True) as conn:
        append_audit(conn, event="test", user_id=None, job_id=None, details={"n": 1})
        # the application role has no UPDATE/DELETE privilege on it at all...
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE audit_log SET event = 'changed'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM audit_log")
        with pytest.raises(ValueError):
            append_audit(conn, event="x", user_id=None, job_id=None, details={"embedding": [1]})
    # ...and even its owner is stopped by the trigger
    with psycopg.connect(live.owner_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException):
            conn.execute("UPDATE audit_log SET event = 'changed'")
        with pytest.raises(psycopg.errors.RaiseException):
            conn.execute("DELETE FROM audit_log")
        with pytest.raises(psycopg.errors.RaiseException):
            conn.execute("TRUNCATE audit_log")


def test_app_role_has_least_privilege(live: LiveStack) -> None:
    """Workers, producers and the CLI connect as a role that owns nothing and may not
    change the schema or rewrite the audit log; the normal work of the other tests
    (enroll, verify, delete...) runs as this role."""
    errors = psycopg.errors
    with psycopg.connect(live.settings.database_dsn(), autocommit=True) as conn:
        assert conn.info.user == live.settings.db_app_role
        row = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles"
            " WHERE rolname = current_user"
        ).fetchone()
        assert row == (False, False, False, False)
        owned = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles"
            " WHERE rolname = current_user)"
        ).fetchone()
        assert owned == (0,)
        # privilege errors (42501): checked before any trigger could run
        refused = [
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete",
            "ALTER TABLE audit_log DISABLE TRIGGER ALL",
            "DROP TRIGGER audit_log_no_truncate ON audit_log",
            "UPDATE audit_log SET event = 'changed'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
            "TRUNCATE templates",
            "DROP TABLE jobs",
            "CREATE TABLE intruder (x int)",
            "CREATE INDEX intruder ON jobs (kind)",
            "INSERT INTO schema_migrations VALUES (9999, 'x', 'y')",
            "DELETE FROM schema_migrations",
            "ALTER FUNCTION audit_log_is_append_only() RENAME TO f",
            "SET session_replication_role = replica",
            "SELECT setval('audit_log_audit_id_seq', 1)",
        ]
        for statement in refused:
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)
        # what it may do
        append_audit(conn, event="privilege-test", user_id=None, job_id=None, details={})
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() is not None
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() is not None
    # The index function validates its input before it builds anything as the owner.
    with psycopg.connect(live.settings.database_dsn()) as conn:
        with pytest.raises(errors.InvalidParameterValue):
            conn.execute("SELECT faceauth_ensure_hnsw_index('never-registered', 8)")
        conn.rollback()
        with pytest.raises(errors.InvalidParameterValue):
            conn.execute("SELECT faceauth_ensure_hnsw_index('x', 0)")
        conn.rollback()
    # The owner is no superuser either.
    with psycopg.connect(live.owner_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row == (False,)


def test_hnsw_index_per_model_version_is_used(live: LiveStack) -> None:
    dim, version = 16, f"synthetic-{uuid4().hex[:8]}"
    rng = np.random.default_rng(1)
    with psycopg.connect(live.settings.database_dsn()) as conn:
        register_vector(conn)
        with conn.transaction():
            repo.ensure_model_version(
                conn, model_name="synthetic", model_version=version, embedding_dim=dim
            )
            for i in range(300):
                vec = rng.normal(size=dim).astype(np.float32)
                vec /= np.linalg.norm(vec)
                repo.write_enrollment(
                    conn,
                    enrollment_id=uuid4(),
                    user_id=f"{version}-u{i}",
                    model_name="synthetic",
                    model_version=version,
                    templates=[repo.NewTemplate(vec, True, {}, None)],
                    liveness_checked=False,
                    duplicate_of=[],
                )
        conn.execute("ANALYZE templates")
        query = rng.normal(size=dim).astype(np.float32)
        query /= np.linalg.norm(query)
        with conn.transaction():
            hnsw = repo.search_mean_templates(
                conn, query, model_version=version, embedding_dim=dim, top_k=5, ef_search=100
            )
        with conn.transaction():
            exact = repo.search_mean_templates(
                conn,
                query,
                model_version=version,
                embedding_dim=dim,
                top_k=5,
                ef_search=100,
                exact=True,
            )
        # The exact search's planner setting does not outlive the query.
        assert conn.execute("SHOW enable_indexscan").fetchone() == ("on",)
        assert [h.user_id for h in hnsw][:3] == [h.user_id for h in exact][:3]
        assert all(a.score >= b.score for a, b in itertools.pairwise(exact))
        with conn.transaction():
            # 300 rows are cheap to sort; make the planner show it *can* use the index.
            conn.execute("SET LOCAL enable_seqscan = off")
            conn.execute("SET LOCAL enable_bitmapscan = off")
            conn.execute("SET LOCAL enable_sort = off")
            plan = "\n".join(
                str(r[0])
                for r in conn.execute(
                    f"EXPLAIN SELECT user_id FROM templates WHERE model_version = '{version}'"
                    f" AND is_active AND is_mean_template ORDER BY embedding::vector({dim})"
                    f" <=> %s::vector({dim}) LIMIT 5",
                    (query,),
                ).fetchall()
            )
        assert repo.hnsw_index_name(version) in plan


def _index_scans(conn: psycopg.Connection, name: str) -> int:
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s", (name,)
    ).fetchone()
    return int(row[0]) if row else -1


@pytest.mark.parametrize("kind", ["halfvec", "bit"])
def test_quantized_index_walks_its_own_index_and_returns_exact_scores(
    live: LiveStack, kind: str
) -> None:
    dim, version = 64, f"quant-{kind}-{uuid4().hex[:8]}"
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(300, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with psycopg.connect(live.settings.database_dsn(), autocommit=True) as conn:
        register_vector(conn)
        with conn.transaction():
            repo.ensure_model_version(
                conn,
                model_name="synthetic",
                model_version=version,
                embedding_dim=dim,
                search_index=kind,
            )
            for i, vec in enumerate(vectors):
                repo.write_enrollment(
                    conn,
                    enrollment_id=uuid4(),
                    user_id=f"{version}-u{i}",
                    model_name="synthetic",
                    model_version=version,
                    templates=[repo.NewTemplate(vec, True, {}, None)],
                    liveness_checked=False,
                    duplicate_of=[],
                )
        assert repo.search_index_of(conn, version) == kind
        conn.execute("ANALYZE templates")
        conn.execute("SET enable_seqscan = off")  # 300 rows: show the index *is* walked
        index = repo.hnsw_index_name(version, kind)
        before = _index_scans(conn, index)
        # A genuine probe: a noisy copy (cosine 0.8) of user 7's template.
        noise = rng.normal(size=dim).astype(np.float32)
        noise -= noise @ vectors[7] * vectors[7]
        probe = 0.8 * vectors[7] + 0.6 * noise / np.linalg.norm(noise)
        hits = repo.search_mean_templates(
            conn,
            probe,
            model_version=version,
            embedding_dim=dim,
            top_k=5,
            ef_search=40,
            rerank_candidates=50,
        )
        assert _index_scans(conn, index) > before
        assert hits[0].user_id == f"{version}-u7"
        exact = vectors @ probe
        for hit in hits:  # scores are the full-precision cosine, not the quantized distance
            i = int(hit.user_id.rsplit("-u", 1)[1])
            assert hit.score == pytest.approx(float(exact[i]), abs=1e-5)
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
        # With every row a candidate, the re-ranked top 5 is the exact top 5.
        everything = repo.search_mean_templates(
            conn,
            probe,
            model_version=version,
            embedding_dim=dim,
            top_k=5,
            ef_search=40,
            rerank_candidates=300,
        )
        want = [f"{version}-u{i}" for i in np.argsort(-exact)[:5]]
        assert [h.user_id for h in everything] == want
        # Switching the version back to a full-precision index is one call.
        with conn.transaction():
            repo.build_search_index(conn, version, dim, "vector")
        assert repo.search_index_of(conn, version) == "vector"


def test_model_version_dimension_is_fixed(live: LiveStack) -> None:
    version = f"dim-{uuid4().hex[:8]}"
    with psycopg.connect(live.settings.database_dsn()) as conn:
        repo.ensure_model_version(conn, model_name="m", model_version=version, embedding_dim=8)
        from shared.errors import FaceauthError

        with pytest.raises(FaceauthError):
            repo.ensure_model_version(conn, model_name="m", model_version=version, embedding_dim=9)
