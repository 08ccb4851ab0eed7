"""The embedded dev stack: real Redis, PostgreSQL + pgvector, SeaweedFS S3, Celery, Flower.

Nothing is mocked: every test that needs a server starts the real binary from the
``devstack`` pip extra. Process-handling tests use plain ``sh``/``sleep`` processes.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from celery import Celery

from deploy.devstack import DevStack, DevStackError, ManagedProcess, StackEndpoints, StartupError
from deploy.devstack.ports import free_port_pairs, free_ports, is_port_free
from deploy.devstack.postgres_server import postgres_bin_dir, remove_external_home
from deploy.devstack.processes import ProcessRecord
from deploy.devstack.redis_server import redis_server_binary
from deploy.devstack.s3_server import weed_binary

REPO_ROOT = Path(__file__).resolve().parents[1]

PROBE_APP = textwrap.dedent(
    """
    import os

    from celery import Celery

    app = Celery(
        "devstack_probe",
        broker=os.environ["FACEAUTH_BROKER_URL"],
        backend=os.environ["FACEAUTH_RESULT_BACKEND_URL"],
    )
    app.conf.task_default_queue = "probe.q"


    @app.task(name="probe.add")
    def add(a, b):
        return a + b


    @app.task(name="probe.getenv")
    def getenv(key):
        return os.environ.get(key)
    """
)


def _require_devstack_binaries() -> None:
    try:
        redis_server_binary()
        postgres_bin_dir()
        weed_binary()
    except RuntimeError as exc:
        pytest.skip(f"dev-stack binaries missing: {exc}")


def _pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _tree_pids(stack: DevStack) -> set[int]:
    return {p.pid for proc in stack.processes() for p in proc.survivors()}


def _write_probe_app(directory: Path) -> dict[str, str]:
    (directory / "devstack_probe_app.py").write_text(PROBE_APP)
    return {"PYTHONPATH": str(directory)}


def _celery_client(endpoints: StackEndpoints) -> Celery:
    return Celery(
        "devstack-test-client",
        broker=endpoints.broker_url(),
        backend=endpoints.result_backend_url(),
    )


def _http_status(
    url: str, user: str | None = None, password: str | None = None, *, method: str = "GET"
) -> int:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


# --- ports ------------------------------------------------------------------------------------


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    assert all(is_port_free(p) for p in ports)


def test_free_port_pairs_keep_the_offset() -> None:
    pairs = free_port_pairs(4, 10000)
    flat = [p for pair in pairs for p in pair]
    assert len(set(flat)) == 8
    for low, high in pairs:
        assert high == low + 10000 <= 65535
        assert is_port_free(low) and is_port_free(high)


def test_port_in_use_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not is_port_free(sock.getsockname()[1])


# --- processes --------------------------------------------------------------------------------


def test_wait_ready_reports_exit_with_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess.spawn(
        "failing",
        ["sh", "-c", "echo 'bind: Address already in use' >&2; exit 3"],
        log_path=tmp_path / "failing.log",
    )
    with pytest.raises(StartupError) as info:
        proc.wait_ready(lambda: False, timeout=10, what="never")
    assert info.value.exited
    assert "exited with status 3" in str(info.value)
    assert "Address already in use" in info.value.tail


def test_wait_ready_times_out_with_last_probe_error(tmp_path: Path) -> None:
    proc = ManagedProcess.spawn("sleeper", ["sleep", "30"], log_path=tmp_path / "s.log")
    try:

        def probe() -> bool:
            raise ConnectionRefusedError("nobody home")

        with pytest.raises(StartupError) as info:
            proc.wait_ready(probe, timeout=0.5, what="answering")
        assert not info.value.exited
        assert "nobody home" in str(info.value)
    finally:
        proc.stop(timeout=5)
    assert not proc.is_alive()


def test_stop_escalates_to_sigkill_and_reaps_setsid_children(tmp_path: Path) -> None:
    """A leader that ignores SIGTERM, with a child in its own session (like postgres)."""
    script = "trap '' TERM; setsid sleep 300 & echo started; while true; do sleep 0.1; done"
    proc = ManagedProcess.spawn("stubborn", ["sh", "-c", script], log_path=tmp_path / "st.log")
    proc.wait_ready(lambda: "started" in proc.new_log_text(), timeout=10, what="started")
    deadline = time.monotonic() + 5
    while len(proc.survivors()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = {p.pid for p in proc.survivors()}
    assert len(pids) >= 2
    assert any(os.getsid(pid) != proc.pid for pid in pids)  # the setsid child escaped the group

    started = time.monotonic()
    proc.stop(timeout=1)
    assert time.monotonic() - started < 10
    assert all(_pid_gone(pid) for pid in pids)
    assert proc.returncode == -signal.SIGKILL


def test_kill_removes_whole_group(tmp_path: Path) -> None:
    proc = ManagedProcess.spawn(
        "group",
        ["sh", "-c", "sleep 300 & sleep 300 & echo up; wait"],
        log_path=tmp_path / "g.log",
    )
    proc.wait_ready(lambda: "up" in proc.new_log_text(), timeout=10, what="up")
    pids = {p.pid for p in proc.survivors()}
    assert len(pids) == 3
    proc.kill()
    assert not proc.is_alive()
    assert all(_pid_gone(pid) for pid in pids)


def test_record_handle_does_not_signal_a_recycled_pid(tmp_path: Path) -> None:
    """A state-file record whose pid now names another process must not touch it."""
    victim = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        real = psutil.Process(victim.pid).create_time()
        stale = ProcessRecord(
            name="old",
            pid=victim.pid,
            pgid=victim.pid,
            create_time=real - 1000.0,
            log_path=str(tmp_path / "old.log"),
        )
        handle = ManagedProcess.from_record(stale)
        assert not handle.is_alive()
        assert handle.survivors() == []
        handle.stop(timeout=1)
        assert victim.poll() is None  # untouched
    finally:
        victim.kill()
        victim.wait()


# --- endpoints / data dir ---------------------------------------------------------------------


def test_endpoints_env_and_secret_free_repr() -> None:
    ep = StackEndpoints(
        redis_url="redis://:redis-pw@127.0.0.1:1234",
        database_url="postgresql://faceauth_app@/faceauth?host=/x&port=5432",
        s3_endpoint="127.0.0.1:9",
        s3_access_key="AK",
        s3_secret_key="top-secret",
        migration_database_url="postgresql://faceauth_owner@/faceauth?host=/x&port=5432",
    )
    env = ep.env()
    assert env["FACEAUTH_BROKER_URL"] == "redis://:redis-pw@127.0.0.1:1234/0"
    assert env["FACEAUTH_RESULT_BACKEND_URL"] == "redis://:redis-pw@127.0.0.1:1234/1"
    assert env["FACEAUTH_S3_SECURE"] == "false"
    assert env["FACEAUTH_S3_SECRET_KEY"] == "top-secret"
    assert env["FACEAUTH_DATABASE_URL"].startswith("postgresql://faceauth_app@")
    assert env["FACEAUTH_MIGRATION_DATABASE_URL"].startswith("postgresql://faceauth_owner@")
    assert "FACEAUTH_FLOWER_USER" not in env
    assert "top-secret" not in repr(ep) and "redis-pw" not in repr(ep)
    assert StackEndpoints.from_json(json.loads(json.dumps(ep.to_json()))) == ep


def test_refuses_foreign_non_empty_data_dir(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    stack = DevStack(tmp_path)
    with pytest.raises(DevStackError, match="not a dev-stack directory"):
        stack.start_services()
    assert (tmp_path / "precious.txt").read_text() == "keep me"


# --- the real stack ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    _require_devstack_binaries()
    data_dir = tmp_path_factory.mktemp("devstack") / "stack"
    started = time.monotonic()
    with DevStack(data_dir) as running:
        elapsed = time.monotonic() - started
        print(f"\nstart_services took {elapsed:.2f}s")
        yield running


@pytest.mark.integration
def test_redis_set_get(stack: DevStack) -> None:
    import redis

    client = redis.Redis.from_url(stack.endpoints.broker_url())
    try:
        client.set("devstack:key", b"value", ex=60)
        assert client.get("devstack:key") == b"value"
        assert client.connection_pool.connection_kwargs["host"] == "127.0.0.1"
    finally:
        client.close()


@pytest.mark.integration
def test_redis_requires_its_password_and_keeps_it_off_argv(stack: DevStack) -> None:
    import redis

    server = stack.redis
    assert server.password and f":{server.password}@" in stack.endpoints.broker_url()
    anonymous = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5)
    wrong = redis.Redis(host="127.0.0.1", port=server.port, password="nope", socket_timeout=5)
    try:
        with pytest.raises(redis.AuthenticationError):
            anonymous.get("devstack:key")
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
    finally:
        anonymous.close()
        wrong.close()
    assert server.process is not None
    assert server.password not in " ".join(psutil.Process(server.process.pid).cmdline())
    assert stat.S_IMODE(server.config_path.stat().st_mode) == 0o600
    client = redis.Redis.from_url(stack.endpoints.broker_url())
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    finally:
        client.close()


@pytest.mark.integration
@pytest.mark.slow
def test_redis_restart_keeps_port_password_and_queued_messages(stack: DevStack) -> None:
    """AOF: a message queued before Redis stops is still there when it is back."""
    import redis

    url = stack.endpoints.broker_url()
    port = stack.redis.port
    client = redis.Redis.from_url(url)
    try:
        client.lpush("devstack:queue", b"job-1", b"job-2")
    finally:
        client.close()
    first_pid = stack.redis.process.pid if stack.redis.process else None
    stack.stop_redis()
    assert stack.redis.process is None and is_port_free(port)
    stack.start_redis()
    assert stack.redis.port == port and stack.endpoints.broker_url() == url
    assert stack.redis.process is not None and stack.redis.process.pid != first_pid
    client = redis.Redis.from_url(url)
    try:
        assert client.lrange("devstack:queue", 0, -1) == [b"job-2", b"job-1"]
        client.rpush("devstack:queue", b"job-3")
    finally:
        client.close()
    stack.restart_redis()
    client = redis.Redis.from_url(url)
    try:
        assert client.lrange("devstack:queue", 0, -1) == [b"job-2", b"job-1", b"job-3"]
        client.delete("devstack:queue")
    finally:
        client.close()


@pytest.mark.integration
def test_postgres_pgvector_hnsw_cosine(stack: DevStack) -> None:
    import psycopg

    owner_url = stack.endpoints.migration_database_url
    assert owner_url is not None
    with psycopg.connect(owner_url) as conn:  # the owner may create tables, the app may not
        assert conn.info.user == "faceauth_owner" and conn.info.dbname == "faceauth"
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")  # the superuser created it
        conn.execute("CREATE TABLE emb (id int PRIMARY KEY, v vector(3))")
        conn.execute("INSERT INTO emb VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0.9,0.1,0]')")
        conn.execute("CREATE INDEX emb_hnsw ON emb USING hnsw (v vector_cosine_ops)")
        conn.execute("SET enable_seqscan = off")  # make the planner use the HNSW index
        plan = "\n".join(
            str(r[0])
            for r in conn.execute(
                "EXPLAIN SELECT id FROM emb ORDER BY v <=> '[1,0,0]' LIMIT 2"
            ).fetchall()
        )
        assert "emb_hnsw" in plan
        rows = conn.execute(
            "SELECT id, 1 - (v <=> '[1,0,0]') FROM emb ORDER BY v <=> '[1,0,0]' LIMIT 2"
        ).fetchall()
    assert [r[0] for r in rows] == [1, 3]
    assert rows[0][1] == pytest.approx(1.0)
    assert rows[1][1] == pytest.approx(0.9 / (0.82**0.5))


@pytest.mark.integration
def test_postgres_listens_on_unix_socket_only(stack: DevStack) -> None:
    assert "host=/" in stack.endpoints.database_url
    postmaster = stack.postgres.process
    assert postmaster is not None and postmaster.is_alive()
    tcp = psutil.Process(postmaster.pid).net_connections("inet")
    assert [c for c in tcp if c.status == psutil.CONN_LISTEN] == []


@pytest.mark.integration
def test_postgres_roles_and_schema_are_ready_after_start(stack: DevStack) -> None:
    """start_services() migrated as the owner; the app role is no superuser, owns nothing."""
    import psycopg

    from shared.db.migrations import load_migrations

    with psycopg.connect(stack.endpoints.database_url) as conn:
        assert conn.info.user == "faceauth_app"
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert [r[0] for r in rows] == [m.version for m in load_migrations()]
    with psycopg.connect(stack.postgres.admin_url) as conn:
        roles = dict(
            conn.execute(
                "SELECT rolname, (rolsuper OR rolcreatedb OR rolcreaterole OR rolbypassrls)"
                " FROM pg_roles WHERE rolname IN ('faceauth_owner', 'faceauth_app')"
            ).fetchall()
        )
        assert roles == {"faceauth_owner": False, "faceauth_app": False}
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'faceauth'"
        ).fetchone()
        assert owner == ("faceauth_owner",)
    with psycopg.connect(stack.endpoints.migration_database_url or "") as conn:
        owned = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = 'faceauth_app'"
        ).fetchone()
        assert owned == (0,)


@pytest.mark.integration
@pytest.mark.slow
def test_postgres_stop_start_keeps_socket_and_data(stack: DevStack) -> None:
    import psycopg

    url = stack.endpoints.database_url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (user_id) VALUES ('restart-survivor')")
    stack.stop_postgres()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2).close()
    stack.start_postgres()
    assert stack.endpoints.database_url == url
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(
            "DELETE FROM users WHERE user_id = 'restart-survivor' RETURNING 1"
        ).fetchall() == [(1,)]


@pytest.mark.integration
def test_s3_roundtrip_with_generated_keys(stack: DevStack) -> None:
    from minio import Minio

    ep = stack.endpoints
    client = Minio(ep.s3_endpoint, ep.s3_access_key, ep.s3_secret_key, secure=False)
    assert client.bucket_exists("devstack-test") is False
    client.make_bucket("devstack-test")
    payload = os.urandom(4096)
    client.put_object("devstack-test", "a/b.bin", io.BytesIO(payload), len(payload))
    response = client.get_object("devstack-test", "a/b.bin")
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()


@pytest.mark.integration
def test_s3_rejects_wrong_secret_and_missing_bucket(stack: DevStack) -> None:
    from minio import Minio
    from minio.error import S3Error

    ep = stack.endpoints
    bad = Minio(ep.s3_endpoint, ep.s3_access_key, "not-" + ep.s3_secret_key, secure=False)
    with pytest.raises(S3Error) as info:
        bad.list_buckets()
    assert info.value.code in {"SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId"}

    good = Minio(ep.s3_endpoint, ep.s3_access_key, ep.s3_secret_key, secure=False)
    with pytest.raises(S3Error) as missing:
        good.put_object("no-such-bucket", "x", io.BytesIO(b"x"), 1)
    assert missing.value.code == "NoSuchBucket"


def _weed_file_ids(stack: DevStack, path: str, cwd: Path) -> list[str]:
    """Chunk file ids of a stored object, from the filer's metadata (over its gRPC port)."""
    s3 = stack.s3
    result = subprocess.run(
        [
            str(weed_binary()),
            "shell",
            f"-master=127.0.0.1:{s3.master_port}",
            f"-filer=127.0.0.1:{s3.filer_port}",
        ],
        input=f"fs.meta.cat {path}\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )
    import re

    return re.findall(r'"fileId":\s*"([^"]+)"', result.stdout)


@pytest.mark.integration
@pytest.mark.slow
def test_s3_filer_and_volume_http_refuse_unsigned_reads(stack: DevStack, tmp_path: Path) -> None:
    """weed's filer and volume HTTP ports would serve a photo to anyone on loopback."""
    from minio import Minio

    ep = stack.endpoints
    client = Minio(ep.s3_endpoint, ep.s3_access_key, ep.s3_secret_key, secure=False)
    bucket = "devstack-private"
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    payload = b"PRIVATE-FACE-" + os.urandom(2048)
    client.put_object(bucket, "faces/a.jpg", io.BytesIO(payload), len(payload))
    s3 = stack.s3
    assert stat.S_IMODE((stack.data_dir / "s3" / "config" / "security.toml").stat().st_mode) == (
        0o600
    )
    filer = f"http://127.0.0.1:{s3.filer_port}"
    for url in (
        f"{filer}/buckets/{bucket}/faces/a.jpg",
        f"{filer}/buckets/{bucket}/faces/a.jpg?metadata=true",
        f"{filer}/buckets/{bucket}/faces/",
    ):
        assert _http_status(url) in (401, 403), url
    assert _http_status(f"{filer}/buckets/{bucket}/faces/b.jpg", method="POST") in (401, 403)
    file_ids = _weed_file_ids(stack, f"/buckets/{bucket}/faces/a.jpg", tmp_path)
    assert file_ids, "could not find the object's file id"
    for file_id in file_ids:
        assert _http_status(f"http://127.0.0.1:{s3.volume_port}/{file_id}") in (401, 403)
    # while S3, with its signatures, still serves it
    response = client.get_object(bucket, "faces/a.jpg")
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()


@pytest.mark.integration
@pytest.mark.slow
def test_s3_stop_start_keeps_endpoint_keys_and_objects(stack: DevStack) -> None:
    from minio import Minio

    ep = stack.endpoints
    client = Minio(ep.s3_endpoint, ep.s3_access_key, ep.s3_secret_key, secure=False)
    bucket = "devstack-restart"
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    client.put_object(bucket, "kept.bin", io.BytesIO(b"kept"), 4)
    stack.stop_s3()
    stack.start_s3()
    assert stack.endpoints.s3_endpoint == stack.s3.endpoint == ep.s3_endpoint
    response = client.get_object(bucket, "kept.bin")
    try:
        assert response.read() == b"kept"
    finally:
        response.close()
        response.release_conn()


@pytest.mark.integration
def test_versions(stack: DevStack) -> None:
    versions = stack.versions()
    assert versions["redis"].startswith("6.")
    assert int(versions["postgres"].split(".")[0]) >= 16
    assert versions["pgvector"].startswith("0.8")
    assert versions["seaweedfs"][0].isdigit()


@pytest.mark.integration
@pytest.mark.slow
def test_worker_runs_tasks_with_stack_env_and_survives_restart(
    stack: DevStack, tmp_path: Path
) -> None:
    env = _write_probe_app(tmp_path) | {"DEVSTACK_PROBE_MARK": "marked"}
    worker = stack.start_worker(
        queues=["probe.q"], name="probe", app="devstack_probe_app:app", extra_env=env
    )
    assert worker.log_path == stack.logs_dir / "probe.log"
    client = _celery_client(stack.endpoints)
    try:
        assert client.send_task("probe.add", args=(2, 3), queue="probe.q").get(timeout=30) == 5
        marked = client.send_task("probe.getenv", args=("DEVSTACK_PROBE_MARK",), queue="probe.q")
        assert marked.get(timeout=30) == "marked"
        endpoint = client.send_task("probe.getenv", args=("FACEAUTH_S3_ENDPOINT",), queue="probe.q")
        assert endpoint.get(timeout=30) == stack.endpoints.s3_endpoint

        with pytest.raises(DevStackError, match="already running"):
            stack.start_worker(queues=["probe.q"], name="probe", app="devstack_probe_app:app")

        tree = {p.pid for p in worker.survivors()}
        assert len(tree) >= 2  # prefork: main process + one pool child
        worker.kill()  # a crash
        assert not worker.is_alive()
        assert all(_pid_gone(pid) for pid in tree)

        again = stack.start_worker(
            queues=["probe.q"], name="probe", app="devstack_probe_app:app", extra_env=env
        )
        assert again.pid != worker.pid
        assert client.send_task("probe.add", args=(4, 5), queue="probe.q").get(timeout=30) == 9
    finally:
        client.close()


@pytest.mark.integration
def test_worker_start_failure_reports_log_tail(stack: DevStack) -> None:
    with pytest.raises(StartupError) as info:
        stack.start_worker(queues=["x.q"], name="broken", app="no_such_module_xyz:app")
    assert info.value.exited
    assert "no_such_module_xyz" in info.value.tail
    assert "broken" not in {p.name for p in stack.processes()}


QUIET_APP = textwrap.dedent(
    """
    import os

    from celery import Celery
    from celery.signals import setup_logging

    app = Celery("devstack_quiet", broker=os.environ["FACEAUTH_BROKER_URL"])


    @setup_logging.connect
    def keep_logging_unconfigured(**kwargs):
        # With no handlers INFO records are dropped, so the "ready." line never reaches
        # the log and the launcher has to find out through a control ping.
        pass
    """
)


@pytest.mark.integration
@pytest.mark.slow
def test_worker_readiness_falls_back_to_control_ping(stack: DevStack, tmp_path: Path) -> None:
    (tmp_path / "devstack_quiet_app.py").write_text(QUIET_APP)
    worker = stack.start_worker(
        queues=["quiet.q"],
        name="quiet",
        app="devstack_quiet_app:app",
        extra_env={"PYTHONPATH": str(tmp_path)},
    )
    try:
        assert " ready." not in worker.new_log_text()
        client = _celery_client(stack.endpoints)
        try:
            replies = client.control.ping(destination=[f"quiet@{socket.gethostname()}"])
        finally:
            client.close()
        assert replies and "quiet@" in next(iter(replies[0]))
    finally:
        worker.stop(timeout=30)
    assert not worker.is_alive()


def _flower_paths() -> list[str]:
    """One concrete path per route of Flower's URL table (capture groups filled in)."""
    import re

    from flower.urls import handlers
    from tornado.web import URLSpec

    paths: list[str] = []
    for handler in handlers:
        pattern = handler.regex.pattern if isinstance(handler, URLSpec) else handler[0]
        if pattern == ".*":
            paths.append("/no-such-page")
            continue
        path = re.sub(r"\(\.[+*]\)", "x", pattern.rstrip("$")).replace("/?", "")
        paths.append(path)
    return paths


@pytest.mark.integration
@pytest.mark.slow
def test_flower_requires_basic_auth_on_every_route(stack: DevStack, tmp_path: Path) -> None:
    url = stack.start_flower(
        user="ops",
        password="s3cret-pw",
        app="devstack_probe_app:app",
        extra_env=_write_probe_app(tmp_path),
    )
    assert url.startswith("http://127.0.0.1:")
    paths = _flower_paths()
    assert {"/", "/metrics", "/healthcheck", "/api/workers", "/api/tasks", "/login"} <= set(paths)
    for path in [*paths, "/dashboard", "/static/css/flower.css"]:
        assert _http_status(f"{url}{path}") == 401, path
        assert _http_status(f"{url}{path}", "ops", "wrong") == 401, path
        assert _http_status(f"{url}{path}", "nobody", "s3cret-pw") == 401, path
        assert _http_status(f"{url}{path}", method="POST") == 401, path
        # With the credentials every route answers as Flower would (GET only: a POST
        # would really act), never 401.
        assert _http_status(f"{url}{path}", "ops", "s3cret-pw") != 401, path
    for path in ("/", "/workers", "/tasks", "/metrics", "/healthcheck", "/api/workers"):
        assert _http_status(f"{url}{path}", "ops", "s3cret-pw") == 200, path
    assert _http_status(f"{url}/api/tasks", "ops", "s3cret-pw") == 200
    env = stack.endpoints.env()
    assert env["FACEAUTH_FLOWER_USER"] == "ops"
    assert env["FACEAUTH_FLOWER_PASSWORD"] == "s3cret-pw"
    assert stack.flower is not None
    assert "s3cret-pw" not in " ".join(psutil.Process(stack.flower.pid).cmdline())
    # the compose healthcheck command authenticates the same way
    check = [sys.executable, "-m", "deploy.flower_auth", "healthcheck", url]
    ok = subprocess.run(
        check,
        env={**os.environ, "FACEAUTH_FLOWER_USER": "ops", "FACEAUTH_FLOWER_PASSWORD": "s3cret-pw"},
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        check,
        env={**os.environ, "FACEAUTH_FLOWER_USER": "ops", "FACEAUTH_FLOWER_PASSWORD": "wrong"},
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 1


@pytest.mark.integration
def test_flower_launcher_refuses_to_start_without_a_password(
    stack: DevStack, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "FACEAUTH_FLOWER_"))}
    env.update(stack.endpoints.env(), **_write_probe_app(tmp_path))
    env.pop("FACEAUTH_FLOWER_PASSWORD", None)
    env.pop("FACEAUTH_FLOWER_USER", None)
    (port,) = free_ports(1)
    argv = [
        sys.executable, "-m", "deploy.flower_auth", "-A", "devstack_probe_app:app",
        "flower", "--address=127.0.0.1", f"--port={port}",
    ]  # fmt: skip
    result = subprocess.run(
        argv,
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "Flower needs basic auth" in result.stderr


# --- lifecycle --------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_stop_leaves_no_process_and_removes_data_dir(tmp_path: Path) -> None:
    _require_devstack_binaries()
    data_dir = tmp_path / "stack"
    stack = DevStack(data_dir)
    stack.start_services()
    try:
        stack.start_worker(
            queues=["probe.q"],
            name="w1",
            app="devstack_probe_app:app",
            extra_env=_write_probe_app(tmp_path),
        )
        pids = _tree_pids(stack)
        # redis + weed + postmaster and its children + worker and its pool child
        assert len(pids) >= 6
        assert data_dir.is_dir()
        outside = stack.postgres.external_dirs + stack.postgres.temp_paths
    finally:
        stack.stop()
    assert all(_pid_gone(pid) for pid in pids), [p for p in pids if not _pid_gone(p)]
    assert not data_dir.exists()
    assert not any(p.exists() for p in outside)
    stack.stop()  # idempotent


@pytest.mark.integration
@pytest.mark.slow
def test_keep_data_keeps_dir_and_postgres_data_survives_restart(tmp_path: Path) -> None:
    _require_devstack_binaries()
    import psycopg

    data_dir = tmp_path / "kept"
    with DevStack(data_dir, keep_data=True) as first:
        with psycopg.connect(first.endpoints.migration_database_url or "") as conn:
            conn.execute("CREATE TABLE survivor (x int)")
            conn.execute("INSERT INTO survivor VALUES (42)")
        first_keys = (first.endpoints.s3_access_key, first.endpoints.s3_secret_key)
        first_pids = _tree_pids(first)
    assert all(_pid_gone(pid) for pid in first_pids)
    assert (data_dir / "logs" / "postgres.log").is_file()
    assert (data_dir / "postgres" / "data" / "PG_VERSION").is_file()

    second = DevStack(data_dir)  # same dir, now removed at the end
    try:
        second.start_services()
        assert (second.endpoints.s3_access_key, second.endpoints.s3_secret_key) != first_keys
        with psycopg.connect(second.endpoints.database_url) as conn:
            # the application role was granted the new table by the second start's migrate
            assert conn.execute("SELECT x FROM survivor").fetchone() == (42,)
    finally:
        second.stop()
    assert not data_dir.exists()


DETACHED_LAUNCHER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from deploy.devstack import DevStack

    stack = DevStack(Path(sys.argv[1]))
    stack.start_services()
    stack.write_state(Path(sys.argv[2]))
    print("launched")
    """
)


@pytest.mark.integration
@pytest.mark.slow
def test_detached_stack_outlives_launcher_and_stops_from_state(tmp_path: Path) -> None:
    _require_devstack_binaries()
    import redis

    data_dir = tmp_path / "detached"
    state = tmp_path / "state" / "devstack.json"
    result = subprocess.run(
        [sys.executable, "-c", DETACHED_LAUNCHER, str(data_dir), str(state)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "launched"  # server output went to log files

    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    saved = json.loads(state.read_text())
    names = [p["name"] for p in saved["processes"]]
    assert names == ["redis", "postgres", "s3"]
    pids = [p["pid"] for p in saved["processes"]]
    try:
        endpoints = DevStack.endpoints_from_state(state)
        client = redis.Redis.from_url(endpoints.broker_url())
        assert client.ping()  # still serving after the launcher exited
        client.close()
        assert all(not _pid_gone(pid) for pid in pids)
    finally:
        DevStack.stop_from_state(state)
    assert all(_pid_gone(pid) for pid in pids)
    assert not data_dir.exists()
    assert not state.exists()


def _faceauth_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from shared.cli import main; main()", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("keep", [False, True], ids=["default", "keep-data"])
def test_dev_down_after_detached_up_removes_data_unless_kept(tmp_path: Path, keep: bool) -> None:
    """`dev up --detach` then `dev down`: the data dir and the PostgreSQL home outside it
    are removed, unless `--keep-data` was given to `dev up`."""
    _require_devstack_binaries()
    data_dir = tmp_path / "dev"
    up = _faceauth_cli(
        "dev", "up", "--detach", "--no-worker", "--no-flower", "--data-dir", str(data_dir),
        *(["--keep-data"] if keep else []),
    )  # fmt: skip
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((data_dir / "state.json").read_text())
    assert state["keep_data"] is keep
    pids = [p["pid"] for p in state["processes"]]
    outside = [Path(p) for p in state["external_dirs"]]  # the PostgreSQL home, as root
    assert all(not _pid_gone(pid) for pid in pids)
    assert stat.S_IMODE((data_dir / "env").stat().st_mode) == 0o600
    down = _faceauth_cli("dev", "down", "--data-dir", str(data_dir))
    assert down.returncode == 0, down.stdout + down.stderr
    assert all(_pid_gone(pid) for pid in pids)
    if keep:
        assert (data_dir / "logs").is_dir()
        assert all(p.is_dir() for p in outside)
        for home in outside:  # what `dev down` kept is ours to clean up here
            remove_external_home(home)
    else:
        assert not data_dir.exists()
        assert not any(p.exists() for p in outside)


@pytest.mark.integration
@pytest.mark.slow
def test_worker_refuses_to_start_on_a_schema_that_is_behind(tmp_path: Path) -> None:
    """Workers (application role) never migrate; they stop with one clear line instead."""
    _require_devstack_binaries()
    from deploy.demo import worker_env

    with DevStack(tmp_path / "behind", migrate=False) as stack:
        with pytest.raises(StartupError) as info:
            stack.start_worker(queues=["faceauth.io"], name="behind", extra_env=worker_env())
        assert info.value.exited
        assert "schema is behind: run `faceauth db migrate`" in info.value.tail
        # `faceauth db migrate` with the dev stack's environment fixes it
        result = subprocess.run(
            [sys.executable, "-c", "from shared.cli import main; main()", "db", "migrate"],
            cwd=REPO_ROOT,
            env={**os.environ, **stack.endpoints.env()},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "applied: [1, 2" in result.stdout


@pytest.mark.integration
def test_compose_init_db_script_creates_least_privilege_roles(stack: DevStack) -> None:
    """deploy/compose/init-db.sh, run as the image's entrypoint would (superuser, socket),
    against the dev stack's PostgreSQL: twice, to show it is idempotent."""
    import psycopg

    from shared.db.migrations import apply_migrations

    admin = stack.postgres.admin_url
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'composetest'").fetchone():
            conn.execute("CREATE DATABASE composetest")  # the entrypoint's POSTGRES_DB
    env = {
        **os.environ,
        "PATH": f"{postgres_bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}",
        "PGHOST": str(stack.postgres.socket_dir),
        "PGPORT": "5432",
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "composetest",
        "DB_OWNER_USER": "ctest_owner",
        "DB_OWNER_PASSWORD": "owner-pw",
        "DB_APP_USER": "ctest_app",
        "DB_APP_PASSWORD": "app-pw",
    }
    script = REPO_ROOT / "deploy" / "compose" / "init-db.sh"
    for _ in range(2):
        result = subprocess.run(
            ["sh", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "owner-pw" not in result.stdout + result.stderr
    with psycopg.connect(admin, autocommit=True) as conn:
        roles = dict(
            conn.execute(
                "SELECT rolname, (rolsuper OR rolcreatedb OR rolcreaterole OR rolbypassrls)"
                " FROM pg_roles WHERE rolname IN ('ctest_owner', 'ctest_app')"
            ).fetchall()
        )
        assert roles == {"ctest_owner": False, "ctest_app": False}
        assert conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'composetest'"
        ).fetchone() == ("ctest_owner",)
    base = f"host={stack.postgres.socket_dir} port=5432 dbname=composetest"
    with psycopg.connect(f"{base} user=postgres") as conn:
        assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
    # then the `migrate` service: as the owner, granting the application role
    assert apply_migrations(f"{base} user=ctest_owner", app_role="ctest_app")[:3] == [1, 2, 3]
    with psycopg.connect(f"{base} user=ctest_app", autocommit=True) as conn:
        conn.execute("INSERT INTO audit_log (event) VALUES ('compose-test')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM audit_log")
