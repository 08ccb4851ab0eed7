"""Container healthcheck: ``python -m gateway.healthcheck [BASE_URL]`` exits 0 when the
gateway answers ``/readyz`` with 200 (Postgres, Redis and S3 reachable), else 1."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8080"


def ready(base_url: str, timeout: float = 10.0) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/readyz", timeout=timeout) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


if __name__ == "__main__":
    raise SystemExit(0 if ready(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_URL) else 1)
