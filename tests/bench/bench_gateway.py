"""What the HTTP hop costs: verification through the gateway vs the Python client, and the
submissions per second the gateway sustains with 1 and 2 uvicorn workers.

    .venv/bin/python tests/bench/bench_gateway.py [--quick] [--verifications 40] [--seconds 8]

One stack (Redis, Postgres, S3, one Celery worker, the gateway on loopback). The 5 people
of ``faces/identities`` are enrolled (all photos but the last); then, after warm-ups,
``--verifications`` rounds each run one verification three ways, in rotating order so
that none always goes first:

- ``gateway``: ``POST /v1/verifications?wait=30`` (multipart upload, keep-alive httpx
  client, a non-admin key so redaction is included); the gateway polls Postgres every
  20 ms at first;
- ``client``: ``FaceauthClient.submit_verification`` + ``FaceauthClient.wait`` (its own
  polling, 50 ms growing to 500 ms): what a Python integrator gets;
- ``client_5ms``: the same submit with the row polled every 5 ms (bench_verify's method),
  the fastest a producer can notice an outcome.

The ratio gateway / client is what the HTTP hop adds (goal: p95 within 10 %).

Throughput: the Celery worker is stopped first, so the jobs only queue and the numbers are
the producer side alone (multipart parse, S3 upload, job row, message; auth, rate limit
and failure-count queries for the gateway). ``--concurrency`` clients submit for
``--seconds`` against the gateway with 1, then 2 uvicorn workers, and against the Python
client from as many threads. The load generator runs on the same 2 cores, so it competes
with what it measures; CPU seconds of the gateway processes are recorded beside.
No timed assertions: a shared 2-core host says little in absolute terms.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _common as c
import httpx
import psutil

from shared.db import api_keys
from shared.db.pool import get_pool

NAME = "bench_gateway"
WARMUPS = 3
# The bench measures capacity, not the default limits (50/s per key; 5 failed verifications
# of a user per 15 minutes, which four impostor claims in five reach at once); both checks
# still run on every request.
UNLIMITED_ENV = {
    "FACEAUTH_GATEWAY_RATE_LIMIT": "1000000/second",
    "FACEAUTH_GATEWAY_VERIFY_FAILURES_LIMIT": "1000000/15 minutes",
}


def new_token(bs: c.BenchStack) -> str:
    scopes = {api_keys.Scope.ENROLL, api_keys.Scope.VERIFY}
    with get_pool(bs.settings).connection() as conn:
        return api_keys.create_key(conn, name="bench", scopes=scopes).token


# --- latency ----------------------------------------------------------------------------------


def via_gateway(http: httpx.Client, token: str) -> Callable[[str, bytes], tuple[float, str]]:
    def run(claimed: str, probe: bytes) -> tuple[float, str]:
        started = time.perf_counter()
        response = http.post(
            "/v1/verifications",
            params={"wait": 30},
            headers={"Authorization": f"Bearer {token}"},
            data={"user_id": claimed},
            files={"image": ("probe.jpg", probe, "image/jpeg")},
        )
        seconds = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"gateway verification: {response.status_code} {response.text}")
        return seconds, str(response.json()["result"]["decision"])

    return run


def via_client(bs: c.BenchStack, *, poll_5ms: bool) -> Callable[[str, bytes], tuple[float, str]]:
    def run(claimed: str, probe: bytes) -> tuple[float, str]:
        started = time.perf_counter()
        job_id = bs.client.submit_verification(claimed, probe)
        job = c.wait_job(bs.client, job_id) if poll_5ms else bs.client.wait(job_id, timeout=30)
        seconds = time.perf_counter() - started
        if job.result is None:
            raise SystemExit(f"client verification failed: {job.error}")
        return seconds, str(job.result["decision"])

    return run


def latency(
    bs: c.BenchStack, token: str, people: dict[str, list[Path]], rounds: int
) -> dict[str, list[float]]:
    names = list(people)
    probes = {name: photos[-1].read_bytes() for name, photos in people.items()}
    assert bs.stack.endpoints.gateway_url is not None
    with httpx.Client(base_url=bs.stack.endpoints.gateway_url, timeout=60) as http:
        paths = {
            "gateway": via_gateway(http, token),
            "client": via_client(bs, poll_5ms=False),
            "client_5ms": via_client(bs, poll_5ms=True),
        }
        for i in range(WARMUPS):
            for run in paths.values():
                run(names[i % len(names)], probes[names[i % len(names)]])
        seconds: dict[str, list[float]] = {name: [] for name in paths}
        order = list(paths)
        for i in range(rounds):
            owner = names[i % len(names)]
            claimed = names[(i + i // len(names)) % len(names)]  # one claim in five genuine
            shift = i % len(order)
            for name in order[shift:] + order[:shift]:
                took, _decision = paths[name](claimed, probes[owner])
                seconds[name].append(took)
    return seconds


# --- throughput -------------------------------------------------------------------------------


def gateway_cpu(bs: c.BenchStack) -> float:
    proc = bs.stack.gateway
    if proc is None:
        return 0.0
    total = 0.0
    leader = psutil.Process(proc.pid)
    for p in [leader, *leader.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


async def _hammer_gateway(
    url: str, token: str, users: list[str], probe: bytes, seconds: float, concurrency: int
) -> tuple[int, int, float]:
    done = errors = 0
    counter = itertools.count()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        started = time.perf_counter()
        deadline = started + seconds

        async def loop() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                user = users[next(counter) % len(users)]
                response = await http.post(
                    "/v1/verifications",
                    headers={"Authorization": f"Bearer {token}"},
                    data={"user_id": user},
                    files={"image": ("probe.jpg", probe, "image/jpeg")},
                )
                if response.status_code == 202:
                    done += 1
                else:
                    errors += 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return done, errors, time.perf_counter() - started


def gateway_throughput(
    bs: c.BenchStack, token: str, users: list[str], probe: bytes, args: Any, workers: int
) -> dict[str, Any]:
    bs.stack.stop_gateway()
    url = bs.stack.start_gateway(workers=workers, extra_env=UNLIMITED_ENV)
    asyncio.run(_hammer_gateway(url, token, users, probe, 1.0, args.concurrency))  # warm-up
    cpu_before = gateway_cpu(bs)
    done, errors, elapsed = asyncio.run(
        _hammer_gateway(url, token, users, probe, args.seconds, args.concurrency)
    )
    return {
        "uvicorn_workers": workers,
        "submitted": done,
        "errors": errors,
        "seconds": round(elapsed, 2),
        "per_second": round(done / elapsed, 1),
        "gateway_cpu_s_per_submission": round((gateway_cpu(bs) - cpu_before) / max(done, 1), 4),
    }


def client_throughput(
    bs: c.BenchStack, users: list[str], probe: bytes, args: Any
) -> dict[str, Any]:
    counter = itertools.count()

    def loop(deadline: float) -> int:
        n = 0
        while time.perf_counter() < deadline:
            bs.client.submit_verification(users[next(counter) % len(users)], probe)
            n += 1
        return n

    # The client's pool holds FACEAUTH_DB_POOL_MAX_SIZE connections, like a gateway process.
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        list(pool.map(loop, [time.perf_counter() + 1.0] * args.concurrency))  # warm-up
        started = time.perf_counter()
        deadline = started + args.seconds
        done = sum(pool.map(loop, [deadline] * args.concurrency))
        elapsed = time.perf_counter() - started
    return {
        "threads": args.concurrency,
        "submitted": done,
        "seconds": round(elapsed, 2),
        "per_second": round(done / elapsed, 1),
    }


# --- report -----------------------------------------------------------------------------------


def plot(result: dict[str, Any], path: Path) -> None:
    fig, axes = c.new_figure(ncols=2, width=6.5)
    ax = axes[0][0]
    for name, values in result["latency_ms"].items():
        ordered = sorted(values)
        ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=name)
    ax.set(title="verify with wait: end to end", xlabel="ms", ylabel="share of verifications")
    ax.legend()
    ax = axes[0][1]
    bars = {f"gateway x{t['uvicorn_workers']}": t["per_second"] for t in result["gateway"]}
    bars["python client"] = result["client"]["per_second"]
    ax.bar(list(bars), list(bars.values()))
    ax.set(title="submissions per second (worker stopped)", ylabel="per second")
    c.save_figure(fig, path)


def main() -> None:
    parser = c.bench_parser(NAME, "gateway vs Python client: latency and submissions/s")
    parser.add_argument("--verifications", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=8.0, help="per throughput run")
    parser.add_argument("--concurrency", type=int, default=16, help="clients in flight")
    args = parser.parse_args()
    if args.quick:
        args.verifications = min(args.verifications, 20)
        args.seconds = min(args.seconds, 4.0)
    people = c.identity_photos()
    probe = next(iter(people.values()))[-1].read_bytes()

    with c.running_stack() as bs:
        bs.stack.start_gateway(extra_env=UNLIMITED_ENV)
        token = new_token(bs)
        c.enroll_all_but_last(bs, people)
        seconds = latency(bs, token, people, args.verifications)
        # Throughput of the producer side alone: nothing consumes the queue meanwhile.
        assert bs.worker is not None
        bs.worker.stop()
        users = list(people)
        gateway = [gateway_throughput(bs, token, users, probe, args, w) for w in (1, 2)]
        client = client_throughput(bs, users, probe, args)

    summaries = {name: c.summary_ms(values) for name, values in seconds.items()}
    ratios = {
        f"gateway_vs_{base}": {
            "p50": round(summaries["gateway"]["p50_ms"] / summaries[base]["p50_ms"], 3),
            "p95": round(summaries["gateway"]["p95_ms"] / summaries[base]["p95_ms"], 3),
        }
        for base in ("client", "client_5ms")
    }
    result = {
        "verifications": args.verifications,
        "liveness": True,
        "latency": summaries,
        "ratios": ratios,
        "gateway": gateway,
        "client": client,
        "concurrency": args.concurrency,
        "latency_ms": {n: [round(s * 1000, 2) for s in v] for n, v in seconds.items()},
    }
    c.print_table(
        f"verify with wait, {args.verifications} rounds after {WARMUPS} warm-ups",
        ["path", "p50 ms", "p95 ms", "min ms", "max ms"],
        [
            [name, s["p50_ms"], s["p95_ms"], s["min_ms"], s["max_ms"]]
            for name, s in summaries.items()
        ],
    )
    c.print_table(
        "what the HTTP hop adds (gateway / client)",
        ["baseline", "p50 ratio", "p95 ratio"],
        [[name, r["p50"], r["p95"]] for name, r in ratios.items()],
    )
    c.print_table(
        f"submissions per second, {args.concurrency} in flight, worker stopped",
        ["producer", "per second", "submitted", "errors", "gateway CPU s / submission"],
        [
            [f"gateway, {t['uvicorn_workers']} uvicorn worker(s)", t["per_second"],
             t["submitted"], t["errors"], t["gateway_cpu_s_per_submission"]]
            for t in gateway
        ]
        + [["python client (threads)", client["per_second"], client["submitted"], 0, None]],
    )  # fmt: skip
    c.write_results(args.out, NAME, result)
    plot(result, c.figure_path(args.out))


if __name__ == "__main__":
    main()
