"""The benchmarks are scripts, not tests: keep pytest from importing them."""

collect_ignore_glob = ["bench_*.py", "run_all.py", "_common.py"]
