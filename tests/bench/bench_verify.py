"""Verify latency end to end through the queue (p50, p95), liveness on.

    .venv/bin/python tests/bench/bench_verify.py [--quick] [--verifications 50]

The 5 people of ``faces/identities`` are enrolled (every photo but the last, liveness
on), then ``--verifications`` verify jobs run one after another, each timed from the
upload of the probe through submit until the job row says finished (polled every 5 ms).
Probes are the held-out photos; the claimed identity cycles so that one claim in five is
genuine and the rest are impostors (the latency should not depend on it; the decisions
are counted as a sanity check). Two warm-up verifications run first. The worker's own
``latency_ms`` (from the job result: templates read, probe checks, embed, decision) is
reported beside the end-to-end time, and the worker's per-stage means come from its
Prometheus endpoint.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import _common as c

NAME = "bench_verify"
WARMUPS = 2


def verify_once(bs: c.BenchStack, claimed: str, probe: bytes) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    job = c.wait_job(bs.client, bs.client.submit_verification(claimed, probe, liveness=True))
    seconds = time.perf_counter() - started
    if job.status != "succeeded" or job.result is None:
        raise SystemExit(f"verification failed: {job.status} {job.error}")
    return seconds, job.result


def plot(result: dict[str, Any], path: Path) -> None:
    fig, axes = c.new_figure(ncols=1, width=7)
    ax = axes[0][0]
    e2e, worker = result["end_to_end_ms"], result["worker_latency_ms"]
    for values, label in ((e2e, "end to end"), (worker, "worker latency_ms")):
        ordered = sorted(values)
        ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label)
    ax.set(title="verify latency (liveness on)", xlabel="ms", ylabel="share of jobs")
    ax.legend()
    c.save_figure(fig, path)


def main() -> None:
    parser = c.bench_parser(NAME, "verify latency through the queue")
    parser.add_argument("--verifications", type=int, default=50)
    parser.add_argument(
        "--probe-det-size",
        type=int,
        default=0,
        help="FACEAUTH_PROBE_DET_SIZE of the worker (0: the pack's det size, 640)",
    )
    args = parser.parse_args()
    extra_env = {"FACEAUTH_PROBE_DET_SIZE": str(args.probe_det_size)} if args.probe_det_size else {}
    people = c.identity_photos()
    names = list(people)
    probes = {name: photos[-1].read_bytes() for name, photos in people.items()}

    e2e: list[float] = []
    worker: list[float] = []
    decisions: Counter[str] = Counter()
    with c.running_stack(metrics=True, extra_env=extra_env) as bs:
        c.enroll_all_but_last(bs, people)
        for i in range(WARMUPS):
            verify_once(bs, names[i], probes[names[i]])
        metrics_before = c.scrape_stage_totals(bs.metrics_url)
        for i in range(args.verifications):
            # Round r shifts the claim by r: rounds 0, 5, ... are genuine, the rest impostors.
            owner = names[i % len(names)]
            claimed = names[(i + i // len(names)) % len(names)]
            seconds, result = verify_once(bs, claimed, probes[owner])
            e2e.append(seconds)
            worker.append(float(result["latency_ms"]) / 1000)
            kind = "genuine" if owner == claimed else "impostor"
            decisions[f"{kind}:{result['decision']}"] += 1
        stages = c.stage_means_ms(metrics_before, c.scrape_stage_totals(bs.metrics_url))

    result = {
        "verifications": args.verifications,
        "probe_det_size": args.probe_det_size or "pack default (640)",
        "liveness": True,
        "end_to_end": c.summary_ms(e2e),
        "worker_latency": c.summary_ms(worker),
        "worker_stage_mean_ms": stages,
        "decisions": dict(sorted(decisions.items())),
        "end_to_end_ms": [round(s * 1000, 2) for s in e2e],
        "worker_latency_ms": [round(s * 1000, 2) for s in worker],
    }
    c.print_table(
        f"verify latency, {args.verifications} sequential jobs after {WARMUPS} warm-ups",
        ["measure", "p50 ms", "p95 ms", "min ms", "max ms"],
        [
            [label, s["p50_ms"], s["p95_ms"], s["min_ms"], s["max_ms"]]
            for label, s in (
                ("end to end (upload + submit + wait)", result["end_to_end"]),
                ("worker latency_ms (job result)", result["worker_latency"]),
            )
        ],
    )
    if stages:
        c.print_table("worker stage means (Prometheus)", ["stage", "ms"], list(stages.items()))
    c.print_table("decisions", ["claim:decision", "count"], list(result["decisions"].items()))
    c.write_results(args.out, NAME, result)
    plot(result, c.figure_path(args.out))


if __name__ == "__main__":
    main()
