"""Helpers shared by the benchmark scripts: the stack, job waiting, stats, tables, output.

The scripts run from the repository root as ``python tests/bench/<name>.py``; importing
this module first puts the repository on ``sys.path``. Results go to
``out/bench/<name>.json`` (git-ignored) with the machine and its load average, because
the 2-core development host is shared and a number means little without them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # runnable as a plain script

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# insightface's face_align calls a scikit-image API deprecated in 0.26: one line per face.
warnings.filterwarnings("ignore", category=FutureWarning, module="insightface")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from deploy.demo import settings_for, worker_env  # noqa: E402
from deploy.devstack import DevStack, ManagedProcess, StackEndpoints  # noqa: E402
from deploy.devstack.ports import LOOPBACK, free_port  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.paths import faces_dir  # noqa: E402
from shared.producer import FaceauthClient, JobTimeout  # noqa: E402
from shared.schemas import JobView  # noqa: E402

console = Console()
# Load average when the script started (write_results adds the one at the end).
LOAD_AT_START = [round(x, 2) for x in os.getloadavg()]

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}
# Fixed poll interval when timing a single job: the client's own ``wait`` backs off to
# 0.5 s, which would blur a ~100 ms round trip. 5 ms of Postgres polling is negligible load.
LATENCY_POLL_S = 0.005


# --- arguments and output ---------------------------------------------------------------------


def bench_parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{name}.py", description=description)
    parser.add_argument(
        "--quick", action="store_true", help="smaller run (part of run_all.py's ~10 minutes)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "out" / "bench" / f"{name}.json",
        help="JSON results (a PNG with the same stem is written beside it)",
    )
    return parser


def machine_info() -> dict[str, Any]:
    import onnxruntime as ort

    threads = os.environ.get("FACEAUTH_ORT_INTRA_OP_THREADS", "0")
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "ort_intra_op_threads": "ORT default" if threads in ("", "0") else int(threads),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def write_results(path: Path, name: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` with the machine, a timestamp and the load average at the end."""
    doc = {
        "bench": name,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_1_5_15": {"start": LOAD_AT_START, "end": load_average()},
        **payload,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    console.print(f"results written to {path}")


def figure_path(json_path: Path) -> Path:
    return json_path.with_suffix(".png")


def new_figure(ncols: int = 1, width: float = 6.0, height: float = 4.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)


def save_figure(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    console.print(f"figure written to {path}")


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(*header, title=title)
    for row in rows:
        table.add_row(*(fmt(v) for v in row))
    console.print(table)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return "-" if value is None else str(value)


# --- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) without needing numpy here."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """n, p50, p95, min, max and mean of durations given in seconds, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "min_ms": round(min(ms), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


# --- photos -----------------------------------------------------------------------------------


def identity_photos() -> dict[str, list[Path]]:
    """Person -> sorted photos of ``faces/identities`` (12 photos of 5 people)."""
    root = faces_dir() / "identities"
    out: dict[str, list[Path]] = {}
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = sorted(p for p in person.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
        if photos:
            out[person.name] = photos
    if not out:
        raise SystemExit(f"no photos under {root} (set FACEAUTH_SHARED_DIR)")
    return out


# --- the stack --------------------------------------------------------------------------------


@dataclass
class BenchStack:
    stack: DevStack
    endpoints: StackEndpoints
    settings: Settings
    client: FaceauthClient
    worker: ManagedProcess | None
    seconds: dict[str, float] = field(default_factory=dict)
    metrics_url: str | None = None  # the worker's Prometheus endpoint, when asked for


@contextmanager
def running_stack(
    *,
    worker: bool = True,
    concurrency: int = 1,
    extra_env: dict[str, str] | None = None,
    metrics: bool = False,
    pool: str = "prefork",
) -> Iterator[BenchStack]:
    """The embedded dev stack in a fresh temporary dir, with one worker on both queues.

    ``seconds`` records how long the servers and the worker took to come up (the stack
    applies the migrations before it returns). ``metrics``
    turns on the worker's Prometheus endpoint (multiprocess mode, so the pool child's
    stage histograms are served).
    """
    root = Path(tempfile.mkdtemp(prefix="faceauth-bench-"))
    stack = DevStack(root)
    env = dict(extra_env or {})
    metrics_url = None
    if metrics:
        port = free_port()
        env["FACEAUTH_METRICS_PORT"] = str(port)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(root / "prometheus")
        metrics_url = f"http://{LOOPBACK}:{port}/metrics"
    try:
        t0 = time.perf_counter()
        endpoints = stack.start_services()
        seconds = {"services_s": time.perf_counter() - t0}
        settings = settings_for(endpoints)
        proc: ManagedProcess | None = None
        if worker:
            t1 = time.perf_counter()
            proc = stack.start_worker(
                queues=[settings.queue_inference, settings.queue_io],
                concurrency=concurrency,
                pool=pool,
                extra_env={**worker_env(), **env},
            )
            seconds["worker_s"] = time.perf_counter() - t1
        client = FaceauthClient(settings)
        yield BenchStack(stack, endpoints, settings, client, proc, seconds, metrics_url)
    finally:
        stack.stop()


def enroll_all_but_last(bs: BenchStack, people: dict[str, list[Path]]) -> None:
    """Enroll each person with every photo but the last (kept back as their probe)."""
    jobs = {
        name: bs.client.submit_enrollment(name, [p.read_bytes() for p in photos[:-1]])
        for name, photos in people.items()
    }
    for name, job_id in jobs.items():
        job = wait_job(bs.client, job_id, poll_s=0.05)
        if job.status != "succeeded":
            raise SystemExit(f"enrollment of {name} failed: {job.error}")


def wait_job(
    client: FaceauthClient, job_id: UUID, *, timeout: float = 120.0, poll_s: float = LATENCY_POLL_S
) -> JobView:
    """Poll the job row at a fixed short interval until it finished."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get_job(job_id)
        if job is not None and job.status.finished:
            return job
        if time.monotonic() > deadline:
            raise JobTimeout(f"job {job_id} not finished after {timeout}s")
        time.sleep(poll_s)


def wait_all(
    settings: Settings, job_ids: Sequence[UUID], *, timeout: float = 600.0, poll_s: float = 0.02
) -> float:
    """Block until every job finished; return ``time.perf_counter()`` when that was seen."""
    from shared.db.pool import get_pool

    ids = list(job_ids)
    deadline = time.monotonic() + timeout
    while True:
        with get_pool(settings).connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM jobs WHERE job_id = ANY(%s)"
                " AND status IN ('succeeded', 'failed')",
                (ids,),
            ).fetchone()
        seen = time.perf_counter()
        if row is not None and int(row[0]) == len(ids):
            return seen
        if time.monotonic() > deadline:
            raise JobTimeout(f"{len(ids) - int(row[0] if row else 0)} job(s) still open")
        time.sleep(poll_s)


def job_outcomes(client: FaceauthClient, job_ids: Sequence[UUID]) -> dict[str, int]:
    """Count of jobs per final status / error code (``succeeded``, ``failed:<code>``)."""
    counts: dict[str, int] = {}
    for job_id in job_ids:
        job = client.get_job(job_id)
        if job is None:
            key = "missing"
        elif job.error:
            key = f"{job.status}:{job.error.get('code')}"
        else:
            key = str(job.status)
        counts[key] = counts.get(key, 0) + 1
    return counts


# --- worker metrics ---------------------------------------------------------------------------

Totals = dict[str, tuple[float, float]]


def scrape_stage_totals(url: str | None) -> Totals:
    """(sum of seconds, count) per stage of the worker's ``faceauth_stage_seconds``.

    Empty when there is no endpoint or it does not answer: the numbers are a diagnosis,
    the benchmark does not depend on them.
    """
    if url is None:
        return {}
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=15) as response:  # loopback URL we built
            text = response.read().decode()
    except OSError:
        return {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "faceauth_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage", "")
            if sample.name.endswith("_sum"):
                sums[stage] = sums.get(stage, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                counts[stage] = counts.get(stage, 0.0) + sample.value
    return {stage: (sums.get(stage, 0.0), counts[stage]) for stage in counts}


def stage_means_ms(before: Totals, after: Totals) -> dict[str, float]:
    """Mean milliseconds per observation of each stage between two scrapes."""
    out: dict[str, float] = {}
    for stage, (total, count) in after.items():
        prev_total, prev_count = before.get(stage, (0.0, 0.0))
        if count > prev_count:
            out[stage] = round((total - prev_total) / (count - prev_count) * 1000, 2)
    return out


# --- CPU time ---------------------------------------------------------------------------------


def stack_cpu_seconds(bs: BenchStack) -> float:
    """User + system CPU seconds so far of this process and every process of the stack.

    The stack's servers and worker with all their children (the pool child, Postgres
    backends). Unlike wall time this barely moves when other users load the host, so
    CPU time per image is the steadier way to compare the queue with the bare loop there.
    A process that exits between two readings takes its time with it (an undercount).
    """
    import psutil

    procs = {os.getpid(): psutil.Process()}
    for managed in bs.stack.processes():
        try:
            leader = psutil.Process(managed.pid)
            procs[leader.pid] = leader
            procs.update({child.pid: child for child in leader.children(recursive=True)})
        except psutil.Error:
            continue
    total = 0.0
    for proc in procs.values():
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system
