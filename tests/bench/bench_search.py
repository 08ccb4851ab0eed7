"""1:N search at scale: genuine hit rate, false matches and latency per index kind.

    .venv/bin/python tests/bench/bench_search.py [--quick] [--sizes 100000,1000000]
        [--intrinsic-dims 0,128] [--index-kinds vector,halfvec,bit] [--probes 200]
        [--ef 16,40,64,128] [--candidates 40,100,200,400] [--exact-probes 50]
        [--max-build-minutes 25]

Only the dev stack's PostgreSQL + pgvector is used (no worker). For each size, that many
L2-normalised 512-d vectors (the production dimension, buffalo_l) are stored as active
mean templates of as many synthetic users under a synthetic model version, with binary
COPY. Then, one kind at a time, the version's partial HNSW index is built through the
workers' own ``faceauth_ensure_search_index`` (with ``maintenance_work_mem`` sized to the
graph and parallel maintenance workers), searched, and dropped:

- ``vector``: full precision, swept over ``hnsw.ef_search`` (``--ef``);
- ``halfvec`` and ``bit`` (binary quantization): swept over the number of candidates the
  walk yields for exact re-ranking (``--candidates``; ef_search the same).

Every query goes through ``search_mean_templates`` (top 5), as a worker runs it. What
matters for faces is measured:

- **genuine hit rate**: probes at cosine ``--probe-similarity`` (default 0.6, a typical
  genuine ArcFace match) to a random enrolled template: is that user ranked first?
  (``source_is_exact_top1`` says how often even an exact search can do it.)
- **false-match behaviour**: probes of people nobody enrolled (fresh vectors of the same
  distribution): is the best score at or above T_low, which is set as ``faceauth
  calibrate`` sets it (99th percentile of impostor pair scores)? The exact best-score
  distribution of those probes is reported too: at a million users the best of a million
  impostor scores is far above a 1:1 threshold, and 1:N decisions need their own.
- recall@1/@5 against exact search (numpy, checked against Postgres on a few probes).

Datasets (``--intrinsic-dims``): ``uniform`` (0), random unit vectors, the worst case for
HNSW (every point about equally far from every other); and ``subspace128``, vectors near
a random 128-d subspace plus isotropic noise, an assumed stand-in for real face
embeddings (impostor cosine std ~0.083, ArcFace's is typically 0.06-0.09; uniform 512-d
gives 0.044). Neither is real data; measure on your own gallery once one exists.

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
BUILD_BYTES_PER_VECTOR = {"vector": 3500, "halfvec": 2500, "bit": 2000}
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


def drop_index_after_registering(conn: psycopg.Connection[Any], model_version: str) -> None:
    """Register the version (which creates its full-precision index) and drop that index:
    loading into an empty table and building afterwards is much faster than inserting
    into a live index."""
    with conn.transaction():
        repo.ensure_model_version(
            conn, model_name=MODEL_NAME, model_version=model_version, embedding_dim=DIM
        )
    conn.execute(
        sql.SQL("DROP INDEX {}").format(sql.Identifier(repo.hnsw_index_name(model_version)))
    )


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


def build_index(
    conn: psycopg.Connection[Any], model_version: str, kind: str, n: int
) -> dict[str, Any]:
    """Build the version's ``kind`` index through the workers' own function; time it."""
    memory_mb = max(256, math.ceil(n * BUILD_BYTES_PER_VECTOR[kind] / 2**20))
    workers = max(0, (os.cpu_count() or 1) - 1)  # the leader builds too
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
    conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(f"{memory_mb}MB")))
    conn.execute(sql.SQL("SET max_parallel_maintenance_workers = {}").format(sql.Literal(workers)))
    started = time.perf_counter()
    with conn.transaction():
        repo.build_search_index(conn, model_version, DIM, kind)
    seconds = time.perf_counter() - started
    conn.execute("RESET maintenance_work_mem")
    conn.execute("RESET max_parallel_maintenance_workers")
    conn.execute("VACUUM (ANALYZE) templates")
    return {
        "build_s": round(seconds, 2),
        "maintenance_work_mem_mb": memory_mb,
        "parallel_maintenance_workers": workers,
        "build_notices": notices,
    }


def relation_sizes(
    conn: psycopg.Connection[Any], model_version: str, kind: str
) -> dict[str, float]:
    row = conn.execute(
        "SELECT pg_relation_size(%s::regclass), pg_total_relation_size('templates')",
        (repo.hnsw_index_name(model_version, kind),),
    ).fetchone()
    assert row is not None
    return {"index_mb": round(row[0] / 2**20, 1), "templates_total_mb": round(row[1] / 2**20, 1)}


def index_scans(conn: psycopg.Connection[Any], model_version: str, kind: str) -> int:
    """Scans of the version's ``kind`` index so far (this backend's counts flushed first)."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s",
        (repo.hnsw_index_name(model_version, kind),),
    ).fetchone()
    return int(row[0]) if row else 0


def search(
    conn: psycopg.Connection[Any],
    probe: Matrix,
    model_version: str,
    *,
    kind: str,
    walk: int,
    exact: bool = False,
) -> tuple[float, list[int], float]:
    """(seconds, stored-vector indices of the hits, best score) for one query, as the worker
    runs it. ``walk`` is hnsw.ef_search for ``vector`` and the re-ranked candidates (and
    ef_search) for the quantized kinds."""
    started = time.perf_counter()
    with conn.transaction():
        hits = repo.search_mean_templates(
            conn,
            probe,
            model_version=model_version,
            embedding_dim=DIM,
            top_k=TOP_K,
            ef_search=walk,
            exact=exact,
            index_kind=kind,
            rerank_candidates=walk,
        )
    seconds = time.perf_counter() - started
    best = hits[0].score if hits else -1.0
    return seconds, [h.template_id.int - TEMPLATE_BASE for h in hits], best


# --- one size ---------------------------------------------------------------------------------


def bench_kind(
    conn: psycopg.Connection[Any],
    model_version: str,
    kind: str,
    n: int,
    probes: Matrix,
    sources: npt.NDArray[np.int64],
    truth: npt.NDArray[Any],
    strangers: Matrix,
    t_low: float,
    args: Any,
) -> dict[str, Any]:
    """Build ``kind``'s index, sweep its walk sizes, drop it again (one index in memory)."""
    row: dict[str, Any] = {"index": kind}
    row.update(build_index(conn, model_version, kind, n))
    row.update(relation_sizes(conn, model_version, kind))
    c.console.print(f"  {kind}: index built in {row['build_s']}s ({row['index_mb']} MB)")
    walks = args.ef if kind == "vector" else args.candidates
    for probe in probes[:5]:  # warm the index pages into the cache
        search(conn, probe, model_version, kind=kind, walk=max(walks))
    row["sweep"] = []
    for walk in walks:
        before = index_scans(conn, model_version, kind)
        times, top1, genuine, overlap = [], [], [], []
        for probe, expected, source in zip(probes, truth, sources, strict=True):
            seconds, hits, _ = search(conn, probe, model_version, kind=kind, walk=walk)
            times.append(seconds)
            top1.append(bool(hits) and hits[0] == expected[0])
            genuine.append(bool(hits) and hits[0] == source)
            overlap.append(len(set(hits) & set(expected.tolist())) / TOP_K)
        stranger_best = []
        for probe in strangers:
            seconds, _, best = search(conn, probe, model_version, kind=kind, walk=walk)
            times.append(seconds)
            stranger_best.append(best)
        row["sweep"].append(
            {
                "walk": walk,
                **c.summary_ms(times),
                "genuine_hit_rate": round(statistics.fmean(genuine), 4),
                "recall_at_1": round(statistics.fmean(top1), 4),
                "recall_at_5": round(statistics.fmean(overlap), 4),
                "false_match_rate_at_t_low": round(
                    statistics.fmean(b >= t_low for b in stranger_best), 4
                ),
                "index_scans": index_scans(conn, model_version, kind) - before,
            }
        )
    conn.execute(
        sql.SQL("DROP INDEX {}").format(sql.Identifier(repo.hnsw_index_name(model_version, kind)))
    )
    return row


def bench_size(
    conn: psycopg.Connection[Any], n: int, intrinsic_dim: int, args: Any
) -> dict[str, Any]:
    label = dataset_label(intrinsic_dim)
    rng = np.random.default_rng([n, intrinsic_dim])
    model_version = f"synthetic-{DIM}d-{label}-{n}"
    t = time.perf_counter()
    vectors = dataset(rng, n, intrinsic_dim)
    drop_index_after_registering(conn, model_version)
    copy_templates(conn, vectors, model_version)
    row: dict[str, Any] = {
        "dataset": label,
        "size": n,
        "load_s": round(time.perf_counter() - t, 2),
    }
    c.console.print(f"{label} {n}: loaded in {row['load_s']}s")
    impostor = (vectors[:2000] @ vectors[2000:4000].T).ravel()
    # T_low as `faceauth calibrate` sets it: the 99th percentile of impostor pair scores.
    t_low = float(np.quantile(impostor, 0.99))
    row["impostor_cosine_mean_std"] = [
        round(float(impostor.mean()), 4),
        round(float(impostor.std()), 4),
    ]
    row["t_low"] = round(t_low, 4)

    probes, sources = noisy_probes(rng, vectors, args.probes, args.probe_similarity)
    truth = exact_top_k(vectors, probes, TOP_K)
    row["source_is_exact_top1"] = float(np.mean(truth[:, 0] == sources))
    # Probes of people nobody enrolled: fresh vectors of the same distribution.
    strangers = dataset(np.random.default_rng([n, intrinsic_dim, 1]), args.probes, intrinsic_dim)
    best = (
        (strangers @ vectors.T).max(axis=1) if n <= 200_000 else _chunked_best(strangers, vectors)
    )
    row["stranger_best_score"] = {
        "p50": round(float(np.median(best)), 4),
        "p99": round(float(np.quantile(best, 0.99)), 4),
        "max": round(float(best.max()), 4),
        # What an exact search would do at T_low; the index can only miss matches.
        "exact_false_match_rate_at_t_low": round(float(np.mean(best >= t_low)), 4),
    }

    row["kinds"] = [
        bench_kind(conn, model_version, kind, n, probes, sources, truth, strangers, t_low, args)
        for kind in args.index_kinds
    ]

    times, agree = [], []
    deadline = time.monotonic() + args.exact_seconds
    for probe, expected in zip(probes[: args.exact_probes], truth, strict=False):
        if len(times) >= 3 and time.monotonic() > deadline:
            break  # exact search is slow at 1M: enough for a latency figure
        seconds, hits, _ = search(conn, probe, model_version, kind="vector", walk=40, exact=True)
        times.append(seconds)
        agree.append(bool(hits) and hits[0] == expected[0])
    row["exact"] = {
        **c.summary_ms(times),
        "top1_agrees_with_numpy": round(statistics.fmean(agree), 4),
    }
    return row


def _chunked_best(probes: Matrix, vectors: Matrix, chunk: int = 100_000) -> npt.NDArray[Any]:
    best = np.full(len(probes), -1.0, dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        best = np.maximum(best, (probes @ vectors[start : start + chunk].T).max(axis=1))
    return best


def reset(conn: psycopg.Connection[Any]) -> None:
    """Empty the tables between sizes (the per-version index goes with its rows' version)."""
    conn.execute("TRUNCATE templates, enrollments, users CASCADE")
    for (name,) in conn.execute(
        "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'templates_hnsw_%'"
    ).fetchall():
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))


def projected_build_s(done: dict[str, Any], n: int) -> float:
    """n log n scaling of the previous size's build times (all index kinds)."""
    m = done["size"]
    built = sum(float(k["build_s"]) for k in done["kinds"])
    return built * (n * math.log(n)) / (m * math.log(m))


def skip_row(
    label: str, n: int, done: dict[str, Any], projected: float, limit: float
) -> dict[str, Any]:
    return {
        "dataset": label,
        "size": n,
        "skipped": True,
        "projected_build_min": round(projected / 60, 1),
        "reason": f"projected HNSW builds {projected / 60:.0f} min > --max-build-minutes "
        f"{limit:g} (n log n from the builds at {done['size']})",
    }


# --- report -----------------------------------------------------------------------------------


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    fig, axes = c.new_figure(ncols=2, width=12, height=4.5)
    hit_ax, fm_ax = axes[0][0], axes[0][1]
    for row in rows:
        if row.get("skipped"):
            continue
        for kind in row["kinds"]:
            name = f"{kind['index']}, {row['dataset']}, {row['size']:,}"
            xs = [h["p95_ms"] for h in kind["sweep"]]
            (line,) = hit_ax.plot(xs, [h["genuine_hit_rate"] for h in kind["sweep"]],
                                  marker="o", label=name)  # fmt: skip
            for h, x, y in zip(kind["sweep"], xs, [h["genuine_hit_rate"] for h in kind["sweep"]],
                               strict=True):  # fmt: skip
                hit_ax.annotate(str(h["walk"]), (x, y), textcoords="offset points",
                                xytext=(3, -9), fontsize="x-small")  # fmt: skip
            fm_ax.plot(xs, [h["false_match_rate_at_t_low"] for h in kind["sweep"]], marker="o",
                       color=line.get_color(), label=name)  # fmt: skip
    for ax in (hit_ax, fm_ax):
        ax.set_xscale("log")
        ax.axvline(10.0, color="grey", linestyle=":", linewidth=1)
    hit_ax.axhline(0.99, color="grey", linestyle=":", linewidth=1)
    hit_ax.set(title=f"genuine probes: enrolled user ranked first (top {TOP_K}, {DIM}-d)",
               xlabel="p95 latency (ms); labels: ef_search / re-ranked candidates",
               ylabel="genuine hit rate")  # fmt: skip
    fm_ax.set(title="probes of people not enrolled: best score >= T_low",
              xlabel="p95 latency (ms)", ylabel="false-match rate at T_low")  # fmt: skip
    hit_ax.legend(fontsize="x-small")
    c.save_figure(fig, path)


def print_report(rows: list[dict[str, Any]]) -> None:
    built = [r for r in rows if not r.get("skipped")]
    c.print_table(
        "load and index builds",
        ["dataset", "vectors", "load s", "index", "build s", "index MB", "build mem MB"],
        [
            [r["dataset"], r["size"], r["load_s"], k["index"], k["build_s"], k["index_mb"],
             k["maintenance_work_mem_mb"]]
            for r in built
            for k in r["kinds"]
        ],
    )  # fmt: skip
    c.print_table(
        f"1:N search (top {TOP_K}): genuine hit rate, false matches, latency",
        ["dataset", "vectors", "index", "walk", "p50 ms", "p95 ms", "genuine hit",
         "recall@1", "false match @T_low", "n"],
        [
            [r["dataset"], r["size"], k["index"], h["walk"], h["p50_ms"], h["p95_ms"],
             h["genuine_hit_rate"], h["recall_at_1"], h["false_match_rate_at_t_low"], h["n"]]
            for r in built
            for k in r["kinds"]
            for h in k["sweep"]
        ],
    )  # fmt: skip
    for r in built:
        s = r["stranger_best_score"]
        c.console.print(
            f"{r['dataset']} {r['size']}: T_low {r['t_low']} (P99 impostor pair); best score "
            f"of a stranger p50 {s['p50']} p99 {s['p99']} max {s['max']}; exact search "
            f"false-match rate at T_low {s['exact_false_match_rate_at_t_low']}; source is "
            f"the exact top 1 for {r['source_is_exact_top1']:.3f} of genuine probes; exact "
            f"scan p50 {r['exact']['p50_ms']} ms"
        )
    for r in rows:
        name = f"{r['dataset']} {r['size']}"
        if r.get("skipped"):
            c.console.print(f"[yellow]{name}: skipped: {r['reason']}[/yellow]")
            continue
        for k in r["kinds"]:
            if k["build_notices"]:
                c.console.print(f"[yellow]{name} {k['index']}: {k['build_notices']}[/yellow]")
            unused = [h["walk"] for h in k["sweep"] if h["index_scans"] < h["n"]]
            if unused:
                c.console.print(f"[red]{name} {k['index']}: index not used ({unused})[/red]")
        if r["exact"]["top1_agrees_with_numpy"] < 1:
            c.console.print(f"[red]{name}: Postgres exact search disagrees with numpy[/red]")


def main() -> None:
    parser = c.bench_parser(NAME, "1:N search latency and recall")
    parser.add_argument("--sizes", help="comma-separated (default 100000,1000000; quick 100000)")
    parser.add_argument(
        "--intrinsic-dims",
        help="datasets: 0 = uniform on the sphere, k = near a random k-dim subspace "
        "(default 0,128; quick 128)",
    )
    parser.add_argument(
        "--index-kinds",
        help="vector,halfvec,bit (default all three; quick vector,bit)",
    )
    parser.add_argument(
        "--candidates",
        default="40,100,200,400",
        help="re-ranked candidates (and ef_search) for the quantized kinds",
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
    dims = [int(x) for x in (args.intrinsic_dims or ("128" if args.quick else "0,128")).split(",")]
    args.ef = [int(e) for e in args.ef.split(",")]
    args.candidates = [int(e) for e in args.candidates.split(",")]
    kinds = args.index_kinds or ("vector,bit" if args.quick else "vector,halfvec,bit")
    args.index_kinds = [k for k in kinds.split(",") if k]
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
        "(shared_buffers 128MB, fsync off); indexes: pgvector defaults m=16, "
        "ef_construction=64; quantized kinds re-rank their candidates by exact cosine",
        "results": rows,
    }
    print_report(rows)
    c.write_results(args.out, NAME, result)
    plot(rows, c.figure_path(args.out))


if __name__ == "__main__":
    main()
