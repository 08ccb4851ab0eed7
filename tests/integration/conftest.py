"""The embedded stack for integration tests, started once per session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from deploy.demo import settings_for, worker_env
from deploy.devstack import DevStack, ManagedProcess, StackEndpoints
from shared.config import Settings
from shared.producer import FaceauthClient

# Short redelivery so a test that kills a worker sees its job come back quickly.
VISIBILITY_TIMEOUT_S = 10
# Short leases and a fast reconciler, so stranded jobs come back within seconds.
DELIVERY_ENV = {
    "FACEAUTH_JOB_LEASE_S": "4",
    "FACEAUTH_JOB_QUEUED_TIMEOUT_S": "15",
    "FACEAUTH_RECONCILE_INTERVAL_S": "0.5",
    # Webhook receivers of the tests listen on loopback; retries come within a second, and
    # an attempt whose sender died is claimed again within 3 x the timeout.
    "FACEAUTH_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
    "FACEAUTH_WEBHOOK_BACKOFF_MAX_S": "1",
    "FACEAUTH_WEBHOOK_TIMEOUT_S": "3",
    # A user's cool-down after FACEAUTH_ATTEMPT_MAX_FAILURES (5) failed decisions ends
    # within a test, not after 15 minutes.
    "FACEAUTH_ATTEMPT_COOLDOWN_S": "3",
}


@dataclass
class LiveStack:
    stack: DevStack
    endpoints: StackEndpoints
    settings: Settings
    client: FaceauthClient
    worker: ManagedProcess

    def worker_env(self) -> dict[str, str]:
        return {
            **worker_env(),
            "FACEAUTH_BROKER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
            **DELIVERY_ENV,
        }

    @property
    def gateway_url(self) -> str:
        """The HTTP gateway of the stack (real uvicorn on a loopback port)."""
        url = self.stack.endpoints.gateway_url
        assert url is not None, "the session stack starts a gateway"
        return url

    @property
    def gateway(self) -> ManagedProcess:
        """The gateway's process (its pid is the uvicorn server: one worker)."""
        proc = self.stack.gateway
        assert proc is not None
        return proc

    def restart_worker(self) -> ManagedProcess:
        if self.worker.is_alive():
            self.worker.stop()
        self.worker = self.stack.start_worker(
            queues=[self.settings.queue_inference, self.settings.queue_io],
            extra_env=self.worker_env(),
        )
        return self.worker

    def sql(self, query: str, *params: object) -> list[tuple[object, ...]]:
        """As the application role (least privilege: what workers and producers can do)."""
        with psycopg.connect(self.settings.database_dsn(), autocommit=True) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    @property
    def owner_dsn(self) -> str:
        """The database owner's DSN (migrations, DDL), for tests that need admin rights."""
        return self.settings.migration_dsn()

    def owner_sql(self, query: str, *params: object) -> list[tuple[object, ...]]:
        """As the owner role: for tests that really need to change the schema."""
        with psycopg.connect(self.owner_dsn, autocommit=True) as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description is not None else []

    def table_counts(self) -> dict[str, int]:
        tables = ("users", "templates", "enrollments", "audit_log", "model_versions")
        return {t: int(self.sql(f"SELECT count(*) FROM {t}")[0][0]) for t in tables}  # type: ignore[call-overload]


@pytest.fixture
def live_env(live: LiveStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveStack]:
    """The process environment (and so ``get_settings()``) points at the live stack."""
    from shared.config import get_settings

    for name, value in live.endpoints.env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield live
    get_settings.cache_clear()


@pytest.fixture
def cli(live_env: LiveStack) -> CliRunner:
    """A CLI runner whose commands reach the live stack."""
    return CliRunner()


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    root: Path = tmp_path_factory.mktemp("stack")
    stack = DevStack(root)
    try:
        endpoints = stack.start_services()
        settings = settings_for(
            endpoints,
            broker_visibility_timeout_s=VISIBILITY_TIMEOUT_S,
            **{k.removeprefix("FACEAUTH_").lower(): v for k, v in DELIVERY_ENV.items()},
        )
        holder = LiveStack(stack, endpoints, settings, FaceauthClient(settings), worker=None)  # type: ignore[arg-type]
        holder.worker = stack.start_worker(
            queues=[settings.queue_inference, settings.queue_io], extra_env=holder.worker_env()
        )
        stack.start_gateway()
        yield holder
    finally:
        stack.stop()
