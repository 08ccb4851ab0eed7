"""Run the gateway under uvicorn (``faceauth gateway``, ``python -m gateway``).

With several workers uvicorn imports ``gateway.app:create_app`` in each (factory mode);
they share ``PROMETHEUS_MULTIPROC_DIR`` so ``/metrics`` sums them. When it is unset a
private temporary directory is made for the server's lifetime (a stale directory from an
earlier run would add its counts to ours, so it is never reused).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator

from shared.config import Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def _metrics_dir(workers: int) -> Iterator[None]:
    if workers <= 1 or os.environ.get(MULTIPROC_ENV):
        yield
        return
    path = tempfile.mkdtemp(prefix="faceauth-gateway-metrics-")
    os.environ[MULTIPROC_ENV] = path  # inherited by the worker processes uvicorn spawns
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def run(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    access_log: bool = True,
) -> None:
    import uvicorn

    host = host or settings.gateway_host
    port = port or settings.gateway_port
    workers = workers or settings.gateway_workers
    log.info("gateway listening on http://%s:%d with %d worker(s)", host, port, workers)
    with _metrics_dir(workers):
        uvicorn.run(
            "gateway.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=access_log,
            log_level=settings.log_level.lower(),
            # X-Forwarded-* only from a proxy on this host: a client must not pick its IP.
            forwarded_allow_ips="127.0.0.1",
            server_header=False,
        )
