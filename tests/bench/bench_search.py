"""1:N search latency (p50, p95) and recall@1 of HNSW vs exact search.

    .venv/bin/python tests/bench/bench_search.py [--quick] [--sizes 100000,1000000]
        [--intrinsic-dims 0,64] [--probes 200] [--exact-probes 50] [--ef 16,40,64,128]
        [--max-build-minutes 25]

Only the dev stack's PostgreSQL + pgvector is used (no worker). For each size, that many
random L2-normalised 512-d vectors (the production dimension, buffalo_l) are stored as
active mean templates of as many synthetic users under a synthetic model version, with
binary COPY. The version's partial HNSW index is the one ``ensure_model_version``
creates (its definition is read back from the catalogue, dropped while loading and
re-created after the COPY, which is much faster than inserting into a live index), built
with ``maintenance_work_mem`` sized to the graph and parallel maintenance workers.

Probes are noisy copies of stored vectors: unit vectors at cosine ``--probe-similarity``
(default 0.6, a typical genuine ArcFace match) to a random stored vector. Every query
goes through ``search_mean_templates`` (top 5) at each ``hnsw.ef_search``; recall@1 is
the share of probes whose HNSW top hit is the exact top hit (computed with numpy over
all vectors, and checked against Postgres' exact search on ``--exact-probes`` probes,
which also gives exact-search latency).

Two synthetic datasets (``--intrinsic-dims``, default ``0,64``, quick ``0``): ``uniform``
(0), random unit vectors, the worst case for HNSW (every point is about equally far from
every other, so the graph carries no direction); and ``subspace64``, vectors near a random 64-d
subspace plus isotropic noise: an assumed stand-in for the low intrinsic dimension of
real face embeddings (impostor cosine std ~0.12 instead of uniform 512-d's 0.044).
Neither is real data; recall on a real gallery should be measured once one exists.

A size whose projected build time (from the previous size, n log n) exceeds
``--max-build-minutes`` is skipped and reported with the projection.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import _common as c
import numpy as np
import numpy.typing as npt
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from shared.db import templates as repo

NAME = "bench_search"
DIM = 512
TOP_K = 5
MODEL_NAME = "synthetic"
# Template i has id UUID(int=TEMPLATE_BASE + i), so a search hit maps back to its row.
TEMPLATE_BASE = 1 << 100
ENROLLMENT_BASE = 2 << 100
# HNSW build memory per vector (the 2 KiB vector plus m=16 neighbour lists), with room
# to spare: a graph that outgrows maintenance_work_mem builds far slower.
BUILD_BYTES_PER_VECTOR = 3500
COPY_CHUNK = 50_000
SUBSPACE_NOISE = 0.3

Matrix = npt.NDArray[np.float32]


# --- data -------------------------------------------------------------------------------------


def unit_rows(rng: np.random.Generator, n: int) -> Matrix:
    rows = rng.standard_normal((n, DIM), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def dataset(rng: np.random.Generator, n: int, intrinsic_dim: int) -> Matrix:
    """``n`` unit vectors: uniform on the sphere (``intrinsic_dim`` 0), or near a random
    ``intrinsic_dim``-dimensional subspace (isotropic noise of ``SUBSPACE_NOISE`` of the
    norm), which is closer to real face embeddings than uniform vectors are."""
    if intrinsic_dim <= 0:
        return unit_rows(rng, n)
    basis, _ = np.linalg.qr(rng.standard_normal((DIM, intrinsic_dim)))
    basis = basis.astype(np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, COPY_CHUNK):
        m = min(COPY_CHUNK, n - start)
        z = rng.standard_normal((m, intrinsic_dim), dtype=np.float32) / math.sqrt(intrinsic_dim)
        g = rng.standard_normal((m, DIM), dtype=np.float32) / math.sqrt(DIM)
        rows = z @ basis.T + SUBSPACE_NOISE * g
        out[start : start + m] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def dataset_label(intrinsic_dim: int) -> str:
    return "uniform" if intrinsic_dim <= 0 else f"subspace{intrinsic_dim}"


def noisy_probes(
    rng: np.random.Generator, vectors: Matrix, n: int, similarity: float
) -> tuple[Matrix, npt.NDArray[np.int64]]:
    """``n`` unit vectors at cosine ``similarity`` to distinct random stored vectors."""
    sources = rng.choice(len(vectors), size=n, replace=False)
    base = vectors[sources]
    noise = unit_rows(rng, n)
    noise -= np.sum(noise * base, axis=1, keepdims=True) * base  # orthogonal to the source
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    probes = similarity * base + math.sqrt(1 - similarity**2) * noise
    return probes.astype(np.float32), sources


def exact_top_k(vectors: Matrix, probes: Matrix, k: int, chunk: int = 100_000) -> npt.NDArray[Any]:
    """Indices of the ``k`` most similar stored vectors per probe, best first (numpy)."""
    best_idx = np.empty((len(probes), 0), dtype=np.int64)
    best_val = np.empty((len(probes), 0), dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        scores = probes @ vectors[start : start + chunk].T
        part = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        best_idx = np.hstack([best_idx, part + start])
        best_val = np.hstack([best_val, np.take_along_axis(scores, part, axis=1)])
        keep = np.argsort(-best_val, axis=1)[:, :k]
        best_idx = np.take_along_axis(best_idx, keep, axis=1)
        best_val = np.take_along_axis(best_val, keep, axis=1)
    return best_idx


# --- database ---------------------------------------------------------------------------------


def connect(dsn: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    register_vector(conn)
    return conn


def index_definition(conn: psycopg.Connection[Any], model_version: str) -> str:
    """Register the version (which creates its HNSW index), keep the index's DDL, drop it."""
    with conn.transaction():
        repo.ensure_model_version(
            conn, model_name=MODEL_NAME, model_version=model_version, embedding_dim=DIM
        )
    name = repo.hnsw_index_name(model_version)
    row = conn.execute("SELECT pg_get_indexdef(%s::regclass)", (name,)).fetchone()
    assert row is not None
    conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    return str(row[0])


def copy_templates(conn: psycopg.Connection[Any], vectors: Matrix, model_version: str) -> None:
    """Users, enrollments and mean templates for every vector, by binary COPY."""
    n = len(vectors)
    with conn.cursor() as cur:
        with cur.copy("COPY users (user_id) FROM STDIN") as copy:
            for i in range(n):
                copy.write_row((f"syn-{i:07d}",))
        with cur.copy(
            "COPY enrollments (enrollment_id, user_id, model_version, n_images, liveness_checked)"
            " FROM STDIN"
        ) as copy:
            for i in range(n):
                copy.write_row((UUID(int=ENROLLMENT_BASE + i), f"syn-{i:07d}", model_version, 1, 0))
        columns = (
            "template_id, user_id, enrollment_id, embedding, is_mean_template,"
            " model_name, model_version"
        )
        with cur.copy(f"COPY templates ({columns}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["uuid", "text", "uuid", "vector", "bool", "text", "text"])
            for start in range(0, n, COPY_CHUNK):
                for i in range(start, min(start + COPY_CHUNK, n)):
                    copy.write_row(
                        (
                            UUID(int=TEMPLATE_BASE + i),
                            f"syn-{i:07d}",
                            UUID(int=ENROLLMENT_BASE + i),
                            vectors[i],
                            True,
                            MODEL_NAME,
                            model_version,
                        )
                    )
    conn.execute("VACUUM (ANALYZE) templates")  # hint bits and stats, as a settled table


def build_index(conn: psycopg.Connection[Any], ddl: str, n: int) -> dict[str, Any]:
    """Run the saved CREATE INDEX with build memory sized to ``n``; time it."""
    memory_mb = max(256, math.ceil(n * BUILD_BYTES_PER_VECTOR / 2**20))
    workers = max(0, (os.cpu_count() or 1) - 1)  # the leader builds too
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
    conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(f"{memory_mb}MB")))
    conn.execute(sql.SQL("SET max_parallel_maintenance_workers = {}").format(sql.Literal(workers)))
    started = time.perf_counter()
    conn.execute(ddl)  # DDL read back from pg_get_indexdef
    seconds = time.perf_counter() - started
    conn.execute("RESET maintenance_work_mem")
    conn.execute("RESET max_parallel_maintenance_workers")
    return {
        "build_s": round(seconds, 2),
        "maintenance_work_mem_mb": memory_mb,
        "parallel_maintenance_workers": workers,
        "build_notices": notices,
    }


def relation_sizes(conn: psycopg.Connection[Any], model_version: str) -> dict[str, float]:
    row = conn.execute(
        "SELECT pg_relation_size(%s::regclass), pg_total_relation_size('templates')",
        (repo.hnsw_index_name(model_version),),
    ).fetchone()
    assert row is not None
    return {"index_mb": round(row[0] / 2**20, 1), "templates_total_mb": round(row[1] / 2**20, 1)}


def index_scans(conn: psycopg.Connection[Any], model_version: str) -> int:
    """Scans of the version's HNSW index so far (this backend's counts flushed first)."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s",
        (repo.hnsw_index_name(model_version),),
    ).fetchone()
    return int(row[0]) if row else 0


def search(
    conn: psycopg.Connection[Any], probe: Matrix, model_version: str, *, ef: int, exact: bool
) -> tuple[float, list[int]]:
    """(seconds, stored-vector indices of the hits) for one query, as the worker runs it."""
    started = time.perf_counter()
    with conn.transaction():
        hits = repo.search_mean_templates(
            conn,
            probe,
            model_version=model_version,
            embedding_dim=DIM,
            top_k=TOP_K,
            ef_search=ef,
            exact=exact,
        )
    seconds = time.perf_counter() - started
    return seconds, [h.template_id.int - TEMPLATE_BASE for h in hits]


# --- one size ---------------------------------------------------------------------------------


def bench_size(
    conn: psycopg.Connection[Any], n: int, intrinsic_dim: int, args: Any
) -> dict[str, Any]:
    label = dataset_label(intrinsic_dim)
    rng = np.random.default_rng([n, intrinsic_dim])
    model_version = f"synthetic-{DIM}d-{label}-{n}"
    t = time.perf_counter()
    vectors = dataset(rng, n, intrinsic_dim)
    ddl = index_definition(conn, model_version)
    copy_templates(conn, vectors, model_version)
    row: dict[str, Any] = {
        "dataset": label,
        "size": n,
        "load_s": round(time.perf_counter() - t, 2),
    }
    c.console.print(f"{label} {n}: loaded in {row['load_s']}s; building HNSW index")
    row.update(build_index(conn, ddl, n))
    row.update(relation_sizes(conn, model_version))
    c.console.print(f"{label} {n}: index built in {row['build_s']}s ({row['index_mb']} MB)")
    impostor = vectors[:1000] @ vectors[1000:2000].T
    row["impostor_cosine_mean_std"] = [
        round(float(impostor.mean()), 4),
        round(float(impostor.std()), 4),
    ]

    probes, sources = noisy_probes(rng, vectors, args.probes, args.probe_similarity)
    truth = exact_top_k(vectors, probes, TOP_K)
    row["source_is_exact_top1"] = float(np.mean(truth[:, 0] == sources))
    for probe in probes[:5]:  # warm the index pages into the cache
        search(conn, probe, model_version, ef=max(args.ef), exact=False)

    row["hnsw"] = []
    for ef in args.ef:
        before = index_scans(conn, model_version)
        times, top1, overlap = [], [], []
        for probe, expected in zip(probes, truth, strict=True):
            seconds, hits = search(conn, probe, model_version, ef=ef, exact=False)
            times.append(seconds)
            top1.append(bool(hits) and hits[0] == expected[0])
            overlap.append(len(set(hits) & set(expected.tolist())) / TOP_K)
        row["hnsw"].append(
            {
                "ef_search": ef,
                **c.summary_ms(times),
                "recall_at_1": round(statistics.fmean(top1), 4),
                "recall_at_5": round(statistics.fmean(overlap), 4),
                "index_scans": index_scans(conn, model_version) - before,
            }
        )

    before = index_scans(conn, model_version)
    times, agree = [], []
    deadline = time.monotonic() + args.exact_seconds
    for probe, expected in zip(probes[: args.exact_probes], truth, strict=False):
        if len(times) >= 3 and time.monotonic() > deadline:
            break  # exact search is slow at 1M: enough for a latency figure
        seconds, hits = search(conn, probe, model_version, ef=40, exact=True)
        times.append(seconds)
        agree.append(bool(hits) and hits[0] == expected[0])
    row["exact"] = {
        **c.summary_ms(times),
        "top1_agrees_with_numpy": round(statistics.fmean(agree), 4),
        "index_scans": index_scans(conn, model_version) - before,
    }
    return row


def reset(conn: psycopg.Connection[Any]) -> None:
    """Empty the tables between sizes (the per-version index goes with its rows' version)."""
    conn.execute("TRUNCATE templates, enrollments, users CASCADE")
    for (name,) in conn.execute(
        "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'templates_hnsw_%'"
    ).fetchall():
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))


def projected_build_s(done: dict[str, Any], n: int) -> float:
    """n log n scaling of the previous size's build time."""
    m = done["size"]
    return float(done["build_s"]) * (n * math.log(n)) / (m * math.log(m))


def skip_row(
    label: str, n: int, done: dict[str, Any], projected: float, limit: float
) -> dict[str, Any]:
    return {
        "dataset": label,
        "size": n,
        "skipped": True,
        "projected_build_min": round(projected / 60, 1),
        "reason": f"projected HNSW build {projected / 60:.0f} min > --max-build-minutes "
        f"{limit:g} (n log n from {done['build_s']} s at {done['size']})",
    }


# --- report -----------------------------------------------------------------------------------


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    fig, axes = c.new_figure(ncols=1, width=7, height=4.5)
    ax = axes[0][0]
    for row in rows:
        if row.get("skipped"):
            continue
        name = f"{row['dataset']}, {row['size']:,}"
        xs = [h["p50_ms"] for h in row["hnsw"]]
        ys = [h["recall_at_1"] for h in row["hnsw"]]
        (line,) = ax.plot(xs, ys, marker="o", label=f"HNSW, {name}")
        for h, x, y in zip(row["hnsw"], xs, ys, strict=True):
            ax.annotate(f"ef {h['ef_search']}", (x, y), textcoords="offset points", xytext=(4, -10))
        ax.plot(
            [row["exact"]["p50_ms"]], [1.0], marker="*", markersize=12, color=line.get_color(),
            linestyle="none", label=f"exact, {name}",
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set(title=f"1:N search, {DIM}-d, top {TOP_K}", xlabel="p50 latency (ms)", ylabel="recall@1")
    ax.legend(fontsize="small")
    c.save_figure(fig, path)


def print_report(rows: list[dict[str, Any]]) -> None:
    built = [r for r in rows if not r.get("skipped")]
    c.print_table(
        "load and index build",
        ["dataset", "vectors", "load s", "build s", "index MB", "table MB", "build mem MB"],
        [
            [r["dataset"], r["size"], r["load_s"], r["build_s"], r["index_mb"],
             r["templates_total_mb"], r["maintenance_work_mem_mb"]]
            for r in built
        ],
    )  # fmt: skip
    c.print_table(
        f"search latency (top {TOP_K}) and recall vs exact",
        ["dataset", "vectors", "mode", "p50 ms", "p95 ms", "recall@1", "recall@5", "n"],
        [
            line
            for r in built
            for line in [
                *(
                    [r["dataset"], r["size"], f"hnsw ef={h['ef_search']}", h["p50_ms"],
                     h["p95_ms"], h["recall_at_1"], h["recall_at_5"], h["n"]]
                    for h in r["hnsw"]
                ),
                [r["dataset"], r["size"], "exact", r["exact"]["p50_ms"], r["exact"]["p95_ms"],
                 1.0, 1.0, r["exact"]["n"]],
            ]
        ],
    )  # fmt: skip
    for r in rows:
        name = f"{r['dataset']} {r['size']}"
        if r.get("skipped"):
            c.console.print(f"[yellow]{name}: skipped: {r['reason']}[/yellow]")
            continue
        if r["build_notices"]:
            c.console.print(f"[yellow]{name}: build notices: {r['build_notices']}[/yellow]")
        unused = [h["ef_search"] for h in r["hnsw"] if h["index_scans"] < h["n"]]
        if unused or r["exact"]["index_scans"]:
            c.console.print(f"[red]{name}: HNSW index not used as expected ({unused})[/red]")
        if r["exact"]["top1_agrees_with_numpy"] < 1:
            c.console.print(f"[red]{name}: Postgres exact search disagrees with numpy[/red]")


def main() -> None:
    parser = c.bench_parser(NAME, "1:N search latency and recall")
    parser.add_argument("--sizes", help="comma-separated (default 100000,1000000; quick 100000)")
    parser.add_argument(
        "--intrinsic-dims",
        help="datasets: 0 = uniform on the sphere, k = near a random k-dim subspace "
        "(default 0,64; quick 0)",
    )
    parser.add_argument("--probes", type=int, default=200, help="queries per ef_search value")
    parser.add_argument("--exact-probes", type=int, help="exact-search queries (50; quick 20)")
    parser.add_argument(
        "--exact-seconds", type=float, default=60.0, help="time budget for exact queries"
    )
    parser.add_argument("--ef", default="16,40,64,128", help="hnsw.ef_search values")
    parser.add_argument("--probe-similarity", type=float, default=0.6)
    parser.add_argument("--max-build-minutes", type=float, default=25.0)
    args = parser.parse_args()
    sizes = sorted(
        int(x) for x in (args.sizes or ("100000" if args.quick else "100000,1000000")).split(",")
    )
    dims = [int(x) for x in (args.intrinsic_dims or ("0" if args.quick else "0,64")).split(",")]
    args.ef = [int(e) for e in args.ef.split(",")]
    args.exact_probes = args.exact_probes or (20 if args.quick else 50)

    rows: list[dict[str, Any]] = []
    with c.running_stack(worker=False) as bs:
        versions = bs.stack.versions()
        # As the owner: the benchmark truncates tables and drops/rebuilds indexes.
        with connect(bs.settings.migration_dsn()) as conn:
            for dim in dims:
                label = dataset_label(dim)
                for n in sizes:
                    done = [r for r in rows if r["dataset"] == label and not r.get("skipped")]
                    if done:
                        projected = projected_build_s(done[-1], n)
                        if projected > args.max_build_minutes * 60:
                            rows.append(
                                skip_row(label, n, done[-1], projected, args.max_build_minutes)
                            )
                            continue
                    reset(conn)
                    rows.append(bench_size(conn, n, dim, args))
    result = {
        "dim": DIM,
        "top_k": TOP_K,
        "probes": args.probes,
        "probe_similarity": args.probe_similarity,
        "subspace_noise": SUBSPACE_NOISE,
        "versions": versions,
        "note": "synthetic vectors; postgres with the dev stack's defaults "
        "(shared_buffers 128MB, fsync off); index: pgvector defaults m=16, ef_construction=64",
        "results": rows,
    }
    print_report(rows)
    c.write_results(args.out, NAME, result)
    plot(rows, c.figure_path(args.out))


if __name__ == "__main__":
    main()
