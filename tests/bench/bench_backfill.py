"""Backfill throughput vs the in-process pipeline, with Redis memory and queue depth.

    .venv/bin/python tests/bench/bench_backfill.py [--quick] [--rows 2000] [--max-in-flight 64]
                                                    [--concurrency 1] [--ort-threads 0]

One run, one fresh embedded stack:

1. The bare in-process loop of the enrollment benchmark (``bench_enrollment.BareLoop``:
   decode + detect + quality on the 12 photos of ``faces/identities``, single process),
   timed before and after the backfill (other users of the host only ever add time,
   so the faster pass is the estimate).
2. ``faceauth backfill`` (``BackfillRunner``, liveness off as back-office jobs run) on a
   synthetic CSV manifest of ``--rows`` users, one photo each, cycling through the 12
   photos: the same pictures under different user ids, so most rows are flagged as
   duplicates (FACEAUTH_DUPLICATE_ACTION=flag, the default) and still enroll. Timed from
   the start of the run until the last row's outcome; local files are uploaded by the
   backfill inside that time.
3. The same manifest again: the resume pass, which must create no job.

A sampler thread reads Redis every 100 ms during the backfill: ``used_memory`` (peak
and baseline), the inference queue's length and the unacknowledged-message count.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common as c
import psutil
import redis
from bench_enrollment import BareLoop, load_photos

from shared.backfill import BackfillOptions, BackfillRunner, BackfillSummary
from shared.backfill.manifest import read_manifest
from shared.config import get_settings

NAME = "bench_backfill"


class RedisSampler(threading.Thread):
    """Peak memory and queue depth of the broker while the backfill runs."""

    def __init__(self, url: str, queue: str, interval_s: float = 0.1) -> None:
        super().__init__(daemon=True, name="redis-sampler")
        self.client = redis.Redis.from_url(url)
        self.queue = queue
        self.interval_s = interval_s
        self.stop_event = threading.Event()
        self.baseline_bytes = int(self.client.info("memory")["used_memory"])
        self.samples: list[tuple[float, int, int, int]] = []  # t, memory, queued, unacked

    def run(self) -> None:
        started = time.perf_counter()
        while not self.stop_event.is_set():
            pipe = self.client.pipeline(transaction=False)
            pipe.info("memory")
            pipe.llen(self.queue)
            pipe.hlen("unacked")
            memory, queued, unacked = pipe.execute()
            self.samples.append(
                (time.perf_counter() - started, int(memory["used_memory"]), queued, unacked)
            )
            self.stop_event.wait(self.interval_s)

    def stop(self) -> dict[str, Any]:
        self.stop_event.set()
        self.join()
        peak = int(self.client.info("memory")["used_memory_peak"])
        return {
            "samples": len(self.samples),
            "baseline_used_memory_mb": round(self.baseline_bytes / 2**20, 2),
            "peak_used_memory_mb": round(max(s[1] for s in self.samples) / 2**20, 2),
            "redis_used_memory_peak_mb": round(peak / 2**20, 2),  # Redis's own high-water mark
            "peak_queue_depth": max(s[2] for s in self.samples),
            "peak_unacked": max(s[3] for s in self.samples),
            "peak_in_broker": max(s[2] + s[3] for s in self.samples),
        }


def cpu_seconds(bs: c.BenchStack) -> dict[str, float]:
    """User + system CPU seconds so far of each stack process tree and of this process.

    Postgres forks a backend per connection; backends that already exited are not
    counted, so the database figure is a lower bound.
    """
    out: dict[str, float] = {}
    for proc in bs.stack.processes():
        total = 0.0
        for member in proc.survivors():
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                total += times.user + times.system
        out[proc.name] = total
    own = psutil.Process().cpu_times()
    out["backfill (this process)"] = own.user + own.system
    return out


def in_worker_ms(bs: c.BenchStack, user_prefix: str, window: int) -> dict[str, Any]:
    """Time inside the worker per job (claim to result), first vs last ``window`` jobs.

    The synthetic rows reuse 12 photos, so the gallery fills with identical mean templates;
    a growing per-job time would show the duplicate search or the index inserts slowing.
    """
    from shared.db.pool import get_pool

    with get_pool(bs.settings).connection() as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM finished_at - started_at)::float8 FROM jobs"
            " WHERE user_id LIKE %s AND kind = 'enroll' ORDER BY started_at",
            (user_prefix + "%",),
        ).fetchall()
    seconds = [float(r[0]) for r in rows]
    return {
        "first": c.summary_ms(seconds[:window]),
        "last": c.summary_ms(seconds[-window:]),
        "all": c.summary_ms(seconds),
    }


def timed_bare_pass(bare: BareLoop, photos: list[bytes]) -> float:
    """Wall seconds of one pass of the enrollment benchmark's in-process loop."""
    started = time.perf_counter()
    bare.run(photos)
    return time.perf_counter() - started


def write_manifest(folder: Path, rows: int) -> Path:
    photos = [p for ps in c.identity_photos().values() for p in ps]
    manifest = folder / "synthetic.csv"
    lines = ["user_id,images"]
    lines += [f"bench-bf-{i:06d},{photos[i % len(photos)]}" for i in range(rows)]
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def backfill(bs: c.BenchStack, manifest: Path, max_in_flight: int) -> BackfillSummary:
    options = BackfillOptions(
        max_in_flight=max_in_flight, progress=True, outcome_path=manifest.with_suffix(".out")
    )
    runner = BackfillRunner(bs.settings, options, client=bs.client)
    return runner.run(
        read_manifest(manifest, bucket=bs.settings.s3_bucket),
        total=sum(1 for _ in manifest.open()) - 1,
        outcome_path=options.outcome_path,
    )


def main() -> None:
    parser = c.bench_parser(NAME, "backfill throughput vs in-process pipeline")
    parser.add_argument("--rows", type=int, help="manifest rows (2000; quick 300)")
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=1, help="worker pool processes")
    parser.add_argument("--ort-threads", type=int, default=0, help="0 = ORT default, both sides")
    parser.add_argument("--rounds", type=int, default=5, help="bare-loop passes over 12 photos")
    args = parser.parse_args()
    rows = args.rows or (300 if args.quick else 2000)
    if args.ort_threads > 0:
        os.environ["FACEAUTH_ORT_INTRA_OP_THREADS"] = str(args.ort_threads)
        get_settings.cache_clear()
    extra_env = {"FACEAUTH_ORT_INTRA_OP_THREADS": str(args.ort_threads)}
    photos = load_photos() * args.rounds
    folder = Path(tempfile.mkdtemp(prefix="faceauth-bench-backfill-"))
    manifest = write_manifest(folder, rows)

    with c.running_stack(concurrency=args.concurrency, extra_env=extra_env, metrics=True) as bs:
        bare = BareLoop(args.ort_threads)
        bare.run(photos[:2])  # warm-up
        bare_s = [timed_bare_pass(bare, photos)]
        warm = bs.client.wait(bs.client.submit_inspection(photos[0]), timeout=120)
        assert warm.status == "succeeded", warm.error  # the worker has loaded its pack
        sampler = RedisSampler(bs.settings.broker_url, bs.settings.queue_inference)
        sampler.start()
        cpu_before = cpu_seconds(bs)
        stages_before = c.scrape_stage_totals(bs.metrics_url)
        first = backfill(bs, manifest, args.max_in_flight)
        cpu_after = cpu_seconds(bs)
        stage_ms = c.stage_means_ms(stages_before, c.scrape_stage_totals(bs.metrics_url))
        broker = sampler.stop()
        worker_ms = in_worker_ms(bs, "bench-bf-", max(rows // 10, 1))
        resume = backfill(bs, manifest, args.max_in_flight)
        bare_s.append(timed_bare_pass(bare, photos))

    bare_ips = len(photos) / min(bare_s)
    result = {
        "rows": rows,
        "images_per_row": 1,
        "worker_concurrency": args.concurrency,
        "max_in_flight": args.max_in_flight,
        "ort_intra_op_threads": args.ort_threads or "ORT default (both sides)",
        "backfill": first.to_dict(),
        "resume_pass": resume.to_dict(),
        "bare_loop_images_per_s": round(bare_ips, 2),
        "bare_loop_pass_seconds": [round(s, 3) for s in bare_s],
        "ratio_backfill_over_bare": round(first.enrollments_per_second / bare_ips, 3),
        "broker": broker,
        "in_worker_ms": worker_ms,
        "worker_stage_mean_ms": stage_ms,
        "cpu_ms_per_row": {
            name: round((cpu_after[name] - cpu_before.get(name, 0.0)) * 1000 / rows, 2)
            for name in cpu_after
        },
        "queue_depth_series": [
            [round(t, 2), q, u]
            for t, _m, q, u in sampler.samples[:: max(1, len(sampler.samples) // 200)]
        ],
    }
    c.print_table(
        f"backfill of {rows} rows (1 photo each) vs the in-process loop",
        ["path", "enrollments/s", "vs bare", "seconds", "notes"],
        [
            ["bare in-process loop (best pass)", bare_ips, 1.0, min(bare_s), "no queue/S3/DB"],
            [
                "faceauth backfill",
                first.enrollments_per_second,
                first.enrollments_per_second / bare_ips,
                first.seconds,
                f"enrolled {first.enrolled}, dup-flagged {first.duplicates_flagged},"
                f" failed {sum(first.failed.values())}",
            ],
            [
                "resume pass (same manifest)",
                None,
                None,
                resume.seconds,
                f"{resume.rows_per_second:.0f} rows/s, new jobs {resume.new_jobs},"
                f" skipped {resume.skipped}",
            ],
        ],
    )
    c.print_table(
        "broker during the backfill",
        ["quantity", "value"],
        [[k, v] for k, v in broker.items() if k != "samples"],
    )
    c.print_table(
        "time inside the worker per job (ms)",
        ["jobs", "p50", "p95", "mean"],
        [[k, v["p50_ms"], v["p95_ms"], v["mean_ms"]] for k, v in worker_ms.items()],
    )
    c.print_table(
        "worker stage means (ms per image, Prometheus)",
        ["stage", "mean ms"],
        list(stage_ms.items()),
    )
    c.print_table(
        "CPU per backfill row (all processes share the host's cores)",
        ["process", "CPU ms per row"],
        sorted(result["cpu_ms_per_row"].items(), key=lambda kv: -kv[1]),
    )
    c.write_results(args.out, NAME, result)


if __name__ == "__main__":
    main()
