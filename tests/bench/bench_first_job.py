"""How long ``dev up`` takes to be ready, and the inspect job's round trip.

    .venv/bin/python tests/bench/bench_first_job.py [--quick] [--starts 3] [--jobs 20]

"dev up ready" is what ``faceauth dev up`` waits for: Redis, PostgreSQL + pgvector and
the S3 server accepting requests (``DevStack.start_services``), a Celery worker reporting
ready, and Flower answering (``--no-flower`` leaves it out). Each start is a fresh data
dir, so initdb is included, as on a first ``dev up``.

Round trip = upload to S3 + submit (job row + broker message) + wait until the job row
says finished (polled every 5 ms), for the inspect job on one sample photo. The first
job of a worker process also loads the face pack; it is reported on its own, then one
more warm-up, then ``--jobs`` timed jobs.
"""

from __future__ import annotations

import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import _common as c

NAME = "bench_first_job"
WARMUPS = 2


def start_once(flower: bool, *, jobs: int, photo: bytes) -> dict[str, Any]:
    """One cold start; with ``jobs`` > 0, also the round trips on the started stack."""
    row: dict[str, Any] = {}
    t0 = time.perf_counter()
    with c.running_stack() as bs:
        if flower:
            t1 = time.perf_counter()
            bs.stack.start_flower(user="admin", password=secrets.token_urlsafe(12))
            bs.seconds["flower_s"] = time.perf_counter() - t1
        row["ready_s"] = time.perf_counter() - t0
        row.update(bs.seconds)
        if jobs:
            row["versions"] = bs.stack.versions()
            row.update(round_trips(bs, photo, jobs))
    return row


def round_trips(bs: c.BenchStack, photo: bytes, jobs: int) -> dict[str, Any]:
    totals: list[float] = []
    uploads: list[float] = []
    for _ in range(WARMUPS + jobs):
        t0 = time.perf_counter()
        key = bs.client.upload_image(photo, prefix="bench/inspect")
        t1 = time.perf_counter()
        job = c.wait_job(bs.client, bs.client.submit_inspection(key))
        totals.append(time.perf_counter() - t0)
        uploads.append(t1 - t0)
        if job.status != "succeeded" or not job.result or job.result.get("face_count") != 1:
            raise SystemExit(f"inspect job did not succeed as expected: {job.status} {job.error}")
    return {
        "first_job_ms": round(totals[0] * 1000, 1),
        "warmup_ms": [round(t * 1000, 1) for t in totals[:WARMUPS]],
        "round_trip": c.summary_ms(totals[WARMUPS:]),
        "upload": c.summary_ms(uploads[WARMUPS:]),
        "round_trips_ms": [round(t * 1000, 2) for t in totals[WARMUPS:]],
    }


def plot(result: dict[str, Any], path: Path) -> None:
    fig, axes = c.new_figure(ncols=2)
    starts = result["starts"]
    parts = [k for k in ("services_s", "worker_s", "flower_s") if k in starts[0]]
    bottom = [0.0] * len(starts)
    xs = list(range(1, len(starts) + 1))
    for part in parts:
        values = [s[part] for s in starts]
        axes[0][0].bar(xs, values, bottom=bottom, width=0.5, label=part.removesuffix("_s"))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes[0][0].set(title="dev up ready", xlabel="start #", ylabel="seconds", xticks=xs)
    axes[0][0].legend()
    rtt = result["round_trips_ms"]
    axes[0][1].plot(range(1, len(rtt) + 1), rtt, marker="o")
    axes[0][1].set(title="inspect job round trip", xlabel="job #", ylabel="ms", ylim=(0, None))
    c.save_figure(fig, path)


def main() -> None:
    parser = c.bench_parser(NAME, __doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--starts", type=int, help="cold starts to time (default 3, quick 1)")
    parser.add_argument("--jobs", type=int, default=20, help="timed inspect jobs")
    parser.add_argument("--no-flower", action="store_true", help="leave Flower out of dev up")
    args = parser.parse_args()
    n_starts = args.starts or (1 if args.quick else 3)
    photo = (c.faces_dir() / "identities" / "obama" / "obama.jpg").read_bytes()

    starts = [
        start_once(not args.no_flower, jobs=args.jobs if i == 0 else 0, photo=photo)
        for i in range(n_starts)
    ]
    first = starts[0]
    result = {
        "flower_included": not args.no_flower,
        "dev_up_ready_s": round(statistics.median(s["ready_s"] for s in starts), 2),
        "versions": first["versions"],
        "first_job_ms": first["first_job_ms"],
        "round_trip": first["round_trip"],
        "upload": first["upload"],
        "round_trips_ms": first["round_trips_ms"],
        "starts": [{k: round(v, 3) for k, v in s.items() if k.endswith("_s")} for s in starts],
    }
    c.print_table(
        "dev up (fresh data dir each start)",
        ["start", "services s", "worker s", "flower s", "ready s"],
        [
            [i + 1, s["services_s"], s["worker_s"], s.get("flower_s"), s["ready_s"]]
            for i, s in enumerate(starts)
        ],
    )
    rt = first["round_trip"]
    c.print_table(
        f"inspect job round trip (upload + submit + wait), {args.jobs} after {WARMUPS} warm-ups",
        ["first job ms", "p50 ms", "p95 ms", "min ms", "max ms", "upload p50 ms"],
        [
            [
                first["first_job_ms"],
                rt["p50_ms"],
                rt["p95_ms"],
                rt["min_ms"],
                rt["max_ms"],
                first["upload"]["p50_ms"],
            ]
        ],
    )
    c.print_table("server versions", ["server", "version"], list(first["versions"].items()))
    c.write_results(args.out, NAME, result)
    plot(result, c.figure_path(args.out))


if __name__ == "__main__":
    main()
