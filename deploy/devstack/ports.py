"""Free TCP port picking on the loopback interface.

The kernel hands out a free port when a socket binds to port 0. Between closing
that probe socket and the server binding the port another process can take it,
so callers treat "address already in use" at server start as retryable (see
``common.start_with_port_retries``) instead of trusting these numbers blindly.
"""

from __future__ import annotations

import socket
from contextlib import ExitStack

LOOPBACK = "127.0.0.1"
MAX_PORT = 65535
_PAIR_ATTEMPTS = 200


def _bind_probe(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def is_port_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether ``port`` can be bound on ``host`` right now."""
    if not 0 < port <= MAX_PORT:
        return False
    try:
        _bind_probe(host, port).close()
    except OSError:
        return False
    return True


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports that are free on ``host``.

    All probe sockets stay bound until every port is chosen, so the kernel
    cannot hand the same port out twice within one call.
    """
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    with ExitStack() as probes:
        ports: list[int] = []
        for _ in range(count):
            sock = probes.enter_context(_bind_probe(host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port(host: str = LOOPBACK) -> int:
    """One free port on ``host``."""
    return free_ports(1, host)[0]


def free_port_pairs(count: int, offset: int, host: str = LOOPBACK) -> list[tuple[int, int]]:
    """``count`` pairs ``(p, p + offset)`` with both ports free and all ports distinct.

    SeaweedFS derives gRPC addresses as HTTP port + 10000 in places that ignore
    the explicit ``*.port.grpc`` flags, so its ports must come in such pairs.
    """
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    if not 0 < offset < MAX_PORT:
        raise ValueError(f"offset out of range: {offset}")
    with ExitStack() as probes:
        pairs: list[tuple[int, int]] = []
        for _ in range(_PAIR_ATTEMPTS):
            if len(pairs) == count:
                break
            low_sock = probes.enter_context(_bind_probe(host, 0))
            low = int(low_sock.getsockname()[1])
            high = low + offset
            if high > MAX_PORT:
                continue  # keep ``low`` bound so the kernel does not offer it again
            try:
                probes.enter_context(_bind_probe(host, high))
            except OSError:
                continue
            pairs.append((low, high))
        if len(pairs) < count:
            raise OSError(
                f"could not find {count} free port pairs (offset {offset}) on {host} "
                f"in {_PAIR_ATTEMPTS} attempts"
            )
        return pairs
