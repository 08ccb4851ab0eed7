"""Model versions, enrollments and templates (pgvector), and 1:N search over them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from shared.errors import ErrorCode, FaceauthError


def as_array(value: Any) -> npt.NDArray[np.float32]:
    """A vector column value as float32 numpy (pgvector >= 0.4 returns ``Vector`` objects)."""
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


# Kinds of 1:N search index a model version may have (shared/db/schema/0008).
SEARCH_INDEX_KINDS = ("vector", "halfvec", "bit")
_INDEX_PREFIX = {
    "vector": "templates_hnsw_",
    "halfvec": "templates_hnswh_",
    "bit": "templates_hnswb_",
}


def hnsw_index_name(model_version: str, kind: str = "vector") -> str:
    """The partial HNSW index of a version's mean templates (named as the SQL function does)."""
    return _INDEX_PREFIX[kind] + hashlib.sha256(model_version.encode()).hexdigest()[:16]


def _vector_type(dim: int) -> sql.Composable:
    return sql.SQL("vector({})").format(sql.Literal(int(dim)))


def ensure_model_version(
    conn: psycopg.Connection,
    *,
    model_name: str,
    model_version: str,
    embedding_dim: int,
    search_index: str = "vector",
) -> bool:
    """Register a model version and its HNSW index; the first version becomes active.

    Returns True when the version is the active one. A version re-registered with
    another dimension is refused: the stored vectors would be meaningless.
    ``search_index`` (FACEAUTH_SEARCH_INDEX) is the kind of index a *new* version gets;
    an existing version keeps its own (``build_search_index`` changes it).
    """
    row = conn.execute(
        "SELECT embedding_dim, is_active FROM model_versions WHERE model_version = %s",
        (model_version,),
    ).fetchone()
    if row is not None:
        if int(row[0]) != embedding_dim:
            raise FaceauthError(
                ErrorCode.MODEL_VERSION_MISMATCH,
                f"model version {model_version!r} is registered with dimension {row[0]},"
                f" the loaded model gives {embedding_dim}",
            )
        return bool(row[1])
    has_active = conn.execute("SELECT 1 FROM model_versions WHERE is_active").fetchone()
    conn.execute(
        "INSERT INTO model_versions (model_version, model_name, embedding_dim, is_active)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (model_version) DO NOTHING",
        (model_version, model_name, embedding_dim, has_active is None),
    )
    # A partial HNSW index per version: the planner uses it for queries that repeat the
    # same expression and predicate (see search_mean_templates). The application role
    # owns no table, so the index is built by a SECURITY DEFINER function owned by the
    # schema owner (shared/db/schema/0003_least_privilege.sql), which derives the same
    # name as hnsw_index_name.
    build_search_index(conn, model_version, embedding_dim, search_index)
    return has_active is None


def build_search_index(
    conn: psycopg.Connection, model_version: str, embedding_dim: int, kind: str
) -> str:
    """Create the version's partial HNSW index of ``kind`` (if missing) and search through it.

    Building over an existing gallery takes minutes per million templates and holds a
    lock that blocks enrollments of that version meanwhile: run it from the command line
    (``faceauth model search-index``), not in a job.
    """
    if kind not in SEARCH_INDEX_KINDS:
        raise ValueError(f"search index kind must be one of {SEARCH_INDEX_KINDS}, not {kind!r}")
    created = conn.execute(
        "SELECT faceauth_ensure_search_index(%s, %s, %s)",
        (model_version, int(embedding_dim), kind),
    ).fetchone()
    expected = hnsw_index_name(model_version, kind)
    if created is None or created[0] != expected:
        raise RuntimeError(
            f"faceauth_ensure_search_index named the index {created!r}, expected {expected!r}"
        )
    return expected


def embedding_dim_of(conn: psycopg.Connection, model_version: str) -> int | None:
    row = conn.execute(
        "SELECT embedding_dim FROM model_versions WHERE model_version = %s", (model_version,)
    ).fetchone()
    return int(row[0]) if row else None


def search_index_of(conn: psycopg.Connection, model_version: str) -> str:
    """The kind of index the version's 1:N searches walk (``vector`` when unregistered)."""
    row = conn.execute(
        "SELECT search_index FROM model_versions WHERE model_version = %s", (model_version,)
    ).fetchone()
    return str(row[0]) if row else "vector"


def active_model_version(conn: psycopg.Connection) -> str | None:
    row = conn.execute("SELECT model_version FROM model_versions WHERE is_active").fetchone()
    return str(row[0]) if row else None


def activate_model_version(conn: psycopg.Connection, model_version: str) -> None:
    exists = conn.execute(
        "SELECT 1 FROM model_versions WHERE model_version = %s", (model_version,)
    ).fetchone()
    if exists is None:
        raise FaceauthError(
            ErrorCode.MODEL_VERSION_MISMATCH, f"model version {model_version!r} is not registered"
        )
    conn.execute("UPDATE model_versions SET is_active = false WHERE is_active")
    conn.execute(
        "UPDATE model_versions SET is_active = true WHERE model_version = %s", (model_version,)
    )


@dataclass(frozen=True)
class NewTemplate:
    embedding: npt.NDArray[np.float32]
    is_mean_template: bool
    quality: dict[str, Any]
    source_image_key: str | None


@dataclass(frozen=True)
class StoredTemplate:
    template_id: UUID
    user_id: str
    embedding: npt.NDArray[np.float32]
    is_mean_template: bool
    model_name: str
    model_version: str
    quality: dict[str, Any]
    source_image_key: str | None
    created_at: Any


def write_enrollment(
    conn: psycopg.Connection,
    *,
    enrollment_id: UUID,
    user_id: str,
    model_name: str,
    model_version: str,
    templates: list[NewTemplate],
    liveness_checked: bool,
    duplicate_of: list[dict[str, Any]],
) -> list[UUID]:
    """Replace the user's active templates for this model version; call inside a transaction.

    The previous templates stay as inactive rows for audit.
    """
    conn.execute(
        "INSERT INTO users (user_id) VALUES (%s)"
        " ON CONFLICT (user_id) DO UPDATE SET updated_at = now()",
        (user_id,),
    )
    conn.execute(
        "UPDATE templates SET is_active = false, deactivated_at = now()"
        " WHERE user_id = %s AND model_version = %s AND is_active",
        (user_id, model_version),
    )
    conn.execute(
        "UPDATE enrollments SET is_active = false WHERE user_id = %s AND model_version = %s"
        " AND is_active",
        (user_id, model_version),
    )
    conn.execute(
        "INSERT INTO enrollments (enrollment_id, user_id, model_version, n_images,"
        " liveness_checked, duplicate_of) VALUES (%s, %s, %s, %s, %s, %s)",
        (
            enrollment_id,
            user_id,
            model_version,
            sum(1 for t in templates if not t.is_mean_template),
            liveness_checked,
            Jsonb(duplicate_of),
        ),
    )
    ids: list[UUID] = []
    with conn.cursor() as cur:
        for template in templates:
            template_id = uuid4()
            cur.execute(
                "INSERT INTO templates (template_id, user_id, enrollment_id, embedding,"
                " is_mean_template, model_name, model_version, quality, source_image_key)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    template_id,
                    user_id,
                    enrollment_id,
                    np.asarray(template.embedding, dtype=np.float32),
                    template.is_mean_template,
                    model_name,
                    model_version,
                    Jsonb(template.quality),
                    template.source_image_key,
                ),
            )
            ids.append(template_id)
    return ids


def active_templates(
    conn: psycopg.Connection, user_id: str, model_version: str | None = None
) -> list[StoredTemplate]:
    query = (
        "SELECT template_id, user_id, embedding, is_mean_template, model_name, model_version,"
        " quality, source_image_key, created_at FROM templates WHERE user_id = %s AND is_active"
    )
    params: list[Any] = [user_id]
    if model_version is not None:
        query += " AND model_version = %s"
        params.append(model_version)
    query += " ORDER BY is_mean_template DESC, created_at, template_id"
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    return [
        StoredTemplate(
            template_id=r["template_id"],
            user_id=r["user_id"],
            embedding=as_array(r["embedding"]),
            is_mean_template=r["is_mean_template"],
            model_name=r["model_name"],
            model_version=r["model_version"],
            quality=r["quality"],
            source_image_key=r["source_image_key"],
            created_at=r["created_at"],
        )
        for r in rows
    ]


def user_exists(conn: psycopg.Connection, user_id: str) -> bool:
    return conn.execute("SELECT 1 FROM users WHERE user_id = %s", (user_id,)).fetchone() is not None


def enrolled_users(
    conn: psycopg.Connection, user_ids: Sequence[str], model_version: str | None
) -> set[str]:
    """Those of ``user_ids`` with an active mean template of ``model_version`` (one query)."""
    if model_version is None or not user_ids:
        return set()
    rows = conn.execute(
        "SELECT DISTINCT user_id FROM templates WHERE is_active AND is_mean_template"
        " AND model_version = %s AND user_id = ANY(%s)",
        (model_version, list(user_ids)),
    ).fetchall()
    return {str(r[0]) for r in rows}


def image_templates_of_version(
    conn: psycopg.Connection, model_version: str
) -> list[tuple[str, UUID, npt.NDArray[np.float32], str]]:
    """(user_id, template_id, embedding, model_name) of every active per-image template of
    ``model_version``, by user, then in the order they were made."""
    rows = conn.execute(
        "SELECT user_id, template_id, embedding, model_name FROM templates"
        " WHERE model_version = %s AND is_active AND NOT is_mean_template"
        " ORDER BY user_id, created_at, template_id",
        (model_version,),
    ).fetchall()
    return [(str(r[0]), r[1], as_array(r[2]), str(r[3])) for r in rows]


def user_template_rows(
    conn: psycopg.Connection, user_id: str, *, include_inactive: bool = False
) -> list[tuple[Any, ...]]:
    """Every column an export needs of the user's (active, or all) templates, by version."""
    return conn.execute(
        "SELECT template_id, user_id, embedding, is_mean_template, model_name, model_version,"
        " quality, source_image_key, is_active, created_at FROM templates"
        " WHERE user_id = %s"
        + ("" if include_inactive else " AND is_active")
        + " ORDER BY model_version, is_mean_template, created_at, template_id",
        (user_id,),
    ).fetchall()


# --- source images ----------------------------------------------------------------------------


def source_image_keys(conn: psycopg.Connection, user_id: str) -> set[str]:
    """The objects the user's templates (active or not) were made from."""
    rows = conn.execute(
        "SELECT DISTINCT source_image_key FROM templates"
        " WHERE user_id = %s AND source_image_key IS NOT NULL",
        (user_id,),
    ).fetchall()
    return {str(r[0]) for r in rows}


def keys_of_other_users(conn: psycopg.Connection, user_id: str, keys: set[str]) -> set[str]:
    """Those of ``keys`` another user's template was made from: never delete them.

    Producers may reference existing keys, so one object can back two users; erasing
    one user must not take away the other's re-embedding source.
    """
    if not keys:
        return set()
    rows = conn.execute(
        "SELECT DISTINCT source_image_key FROM templates"
        " WHERE user_id <> %s AND source_image_key = ANY(%s)",
        (user_id, sorted(keys)),
    ).fetchall()
    return {str(r[0]) for r in rows}


def clear_source_keys(conn: psycopg.Connection, user_id: str, keys: set[str]) -> int:
    """Forget the deleted source objects ``keys`` of the user's templates; rows updated."""
    cur = conn.execute(
        "UPDATE templates SET source_image_key = NULL"
        " WHERE user_id = %s AND source_image_key = ANY(%s)",
        (user_id, sorted(keys)),
    )
    return cur.rowcount


def delete_user_templates(conn: psycopg.Connection, user_id: str) -> list[tuple[str | None, bool]]:
    """Delete every template of the user; (source_image_key, is_active) of each."""
    rows = conn.execute(
        "DELETE FROM templates WHERE user_id = %s RETURNING source_image_key, is_active",
        (user_id,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


@dataclass(frozen=True)
class SearchHit:
    user_id: str
    score: float
    template_id: UUID


def search_mean_templates(
    conn: psycopg.Connection,
    embedding: npt.NDArray[np.float32],
    *,
    model_version: str,
    embedding_dim: int,
    top_k: int,
    ef_search: int,
    exact: bool = False,
    exclude_user: str | None = None,
    index_kind: str | None = None,
    rerank_candidates: int = 100,
) -> list[SearchHit]:
    """Top-k users by cosine similarity of their active mean template (HNSW or exact).

    HNSW alone stops after ``ef_search`` candidates, so a filter applied after the walk
    (another version's rows, an excluded user) could leave fewer than ``top_k`` rows.
    pgvector 0.8's iterative index scan keeps walking until the filtered query has its
    rows, so no count of the gallery and no exact re-run are needed per query; relaxed
    order is re-sorted here (a few rows).

    ``index_kind`` (default: the version's, ``search_index_of``) selects the walk. With a
    quantized index (``halfvec``, ``bit``) the walk yields ``rerank_candidates`` rows in
    quantized order and the stored full-precision vectors re-rank them, so every score
    returned is the exact cosine and quantization can only cost recall, never accuracy
    of a score. ``exact`` (a sequential scan) is for benchmarks and checks.

    The settings are set for this query only: ``SET LOCAL`` then ``RESET``, so they
    neither outlive the query inside a caller's larger transaction nor leak to the next
    user of a pooled connection.
    """
    kind = "vector" if exact else (index_kind or search_index_of(conn, model_version))
    if kind not in SEARCH_INDEX_KINDS:
        raise ValueError(f"unknown search index kind {kind!r}")
    dim = sql.Literal(int(embedding_dim))
    vt = _vector_type(embedding_dim)
    where = sql.SQL(
        "FROM templates WHERE model_version = {mv} AND is_active AND is_mean_template {exclude}"
    ).format(
        mv=sql.Literal(model_version),
        exclude=sql.SQL("AND user_id <> %(ex)s") if exclude_user else sql.SQL(""),
    )
    score = sql.SQL("1 - (embedding::{vt} <=> %(q)s::{vt})").format(vt=vt)
    if kind == "vector":
        query = sql.SQL(
            "SELECT template_id, user_id, {score} AS score {where}"
            " ORDER BY embedding::{vt} <=> %(q)s::{vt} LIMIT %(k)s"
        ).format(score=score, where=where, vt=vt)
        walk = top_k
    else:
        # The ORDER BY expression must be the index's own expression for the planner to
        # walk the index (shared/db/schema/0008_search_index_kinds.sql).
        order = {
            "halfvec": sql.SQL("embedding::halfvec({d}) <=> %(q)s::vector::halfvec({d})"),
            "bit": sql.SQL(
                "binary_quantize(embedding)::bit({d}) <~> binary_quantize(%(q)s::vector({d}))"
            ),
        }[kind].format(d=dim)
        query = sql.SQL(
            "SELECT template_id, user_id, score FROM ("
            "SELECT template_id, user_id, {score} AS score {where} ORDER BY {order} LIMIT %(n)s"
            ") AS candidates ORDER BY score DESC LIMIT %(k)s"
        ).format(score=score, where=where, order=order)
        walk = max(top_k, rerank_candidates)
    with conn.transaction():
        # One round trip each way (several statements, no parameters: simple protocol).
        conn.execute(
            sql.SQL(
                "SET LOCAL hnsw.ef_search = {}; SET LOCAL hnsw.iterative_scan = relaxed_order;"
                " SET LOCAL enable_indexscan = {}"
            ).format(sql.Literal(max(ef_search, walk)), sql.SQL("off" if exact else "on"))
        )
        rows = conn.execute(
            query,
            {
                "q": np.asarray(embedding, dtype=np.float32),
                "k": top_k,
                "n": walk,
                "ex": exclude_user,
            },
        ).fetchall()
        # (On an error the block rolls back, which undoes the SET LOCALs as well.)
        conn.execute("RESET hnsw.ef_search; RESET hnsw.iterative_scan; RESET enable_indexscan")
    hits = [SearchHit(user_id=str(r[1]), score=float(r[2]), template_id=r[0]) for r in rows]
    hits.sort(key=lambda h: h.score, reverse=True)  # relaxed order: nearly sorted already
    return hits


@dataclass(frozen=True)
class VersionProgress:
    model_version: str
    model_name: str
    embedding_dim: int
    is_active: bool
    users: int


def migration_progress(conn: psycopg.Connection) -> tuple[int, list[VersionProgress]]:
    """(users with any active template, per-version counts of users with active templates)."""
    total = conn.execute("SELECT count(DISTINCT user_id) FROM templates WHERE is_active").fetchone()
    rows = conn.execute(
        "SELECT mv.model_version, mv.model_name, mv.embedding_dim, mv.is_active,"
        " count(DISTINCT t.user_id) FROM model_versions mv"
        " LEFT JOIN templates t ON t.model_version = mv.model_version AND t.is_active"
        " GROUP BY mv.model_version, mv.model_name, mv.embedding_dim, mv.is_active, mv.created_at"
        " ORDER BY mv.created_at"
    ).fetchall()
    return int(total[0]) if total else 0, [
        VersionProgress(str(r[0]), str(r[1]), int(r[2]), bool(r[3]), int(r[4])) for r in rows
    ]


def users_missing_version(conn: psycopg.Connection, model_version: str) -> list[str]:
    """Users with active templates of some other version but none of ``model_version``."""
    rows = conn.execute(
        "SELECT DISTINCT user_id FROM templates t WHERE is_active AND NOT EXISTS"
        " (SELECT 1 FROM templates n WHERE n.user_id = t.user_id AND n.is_active"
        "  AND n.model_version = %s) ORDER BY user_id",
        (model_version,),
    ).fetchall()
    return [str(r[0]) for r in rows]
