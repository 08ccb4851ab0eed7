"""Re-embedding driver: every user without templates of a target model version (resumable).

Each user gets one ``faceauth.reembed`` job under an idempotency key derived from the
target version, so a second run (or one resumed after a crash) finds the jobs of the
first instead of submitting new ones. At most ``max_in_flight`` jobs are unfinished
at once (``InFlightWindow``).
"""

from __future__ import annotations

import time
from collections import deque

import psycopg
from tqdm import tqdm

from shared.backfill.window import InFlightWindow
from shared.config import Settings, get_settings
from shared.db import templates as template_repo
from shared.schemas import JobStatus


def reembed_all(
    target: str, max_in_flight: int, timeout: float, settings: Settings | None = None
) -> dict[str, int]:
    """Re-embed the users that lack ``target`` templates; counts of each outcome."""
    from shared.producer import FaceauthClient

    settings = settings or get_settings()
    client = FaceauthClient(settings)
    with psycopg.connect(settings.database_dsn()) as conn:
        todo = template_repo.users_missing_version(conn, target)
    outcome = {"reembedded": 0, "already_current": 0, "failed": 0}
    window: InFlightWindow[str] = InFlightWindow(settings, max_in_flight)
    deadline = time.monotonic() + timeout
    bar = tqdm(total=len(todo), desc=f"re-embed to {target}", unit="user")
    queue = deque(todo)
    while (queue or window) and time.monotonic() < deadline:
        while queue and window.has_room:
            user = queue.popleft()
            job_id = client.submit_reembed(user, idempotency_key=f"reembed:{target}:{user}")
            window.add(job_id, user)
        for _user, state in window.collect():
            succeeded = state.status == JobStatus.SUCCEEDED
            status = (state.result or {}).get("status") if succeeded else None
            outcome[status if status in outcome else "failed"] += 1
            bar.update(1)
        time.sleep(0.2)
    bar.close()
    return outcome
