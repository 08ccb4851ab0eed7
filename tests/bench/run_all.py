"""Run every benchmark in sequence: ``--quick`` sizes by default (about 10 minutes on 2 cores).

    .venv/bin/python tests/bench/run_all.py [--full] [--only bench_search,bench_verify]

Each script runs in its own process (each starts and stops its own dev stack) and writes
``out/bench/<name>.json`` and a PNG; this writes ``out/bench/run_all.json`` with each
script's exit status and duration. Exits non-zero when any script failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import _common as c

# Cheapest first, so a broken stack shows up before the long search build.
BENCHES = (
    "bench_first_job",
    "bench_enrollment",
    "bench_verify",
    "bench_gateway",
    "bench_search",
    "bench_backfill",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--full", action="store_true", help="full sizes (search at 1M: long)")
    parser.add_argument("--only", help="comma-separated subset of " + ",".join(BENCHES))
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark(s): {unknown}")

    rows = []
    for name in names:
        argv = [sys.executable, str(c.ROOT / "tests" / "bench" / f"{name}.py")]
        if not args.full:
            argv.append("--quick")
        c.console.rule(name)
        started = time.perf_counter()
        rc = subprocess.run(argv, cwd=c.ROOT, check=False).returncode
        rows.append({"bench": name, "rc": rc, "seconds": round(time.perf_counter() - started, 1)})
    c.print_table("benchmarks", ["bench", "exit", "seconds"], [list(r.values()) for r in rows])
    c.write_results(
        c.ROOT / "out" / "bench" / "run_all.json", "run_all", {"quick": not args.full, "runs": rows}
    )
    sys.exit(1 if any(r["rc"] for r in rows) else 0)


if __name__ == "__main__":
    main()
