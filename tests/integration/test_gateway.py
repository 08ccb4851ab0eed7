"""The HTTP gateway on the real stack: uvicorn on a loopback port, started by the stack,
talking to the same Redis, Postgres, S3 and Celery worker as every other producer.

Requests go through httpx exactly as another service would send them; outcomes are
checked both in the HTTP answers and in the job rows and audit entries.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import psutil
import psycopg
import pytest
from typer.testing import CliRunner

from shared.db import api_keys
from shared.db.api_keys import Scope

from .conftest import LiveStack

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
MB = 1024 * 1024


# --- helpers ----------------------------------------------------------------------------------


class Keys:
    """API keys of every scope combination the tests need, created as the app role."""

    def __init__(self, live: LiveStack) -> None:
        self.live = live
        self.tokens: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        for name, scopes in {
            "admin": {Scope.ADMIN},
            "enroll_verify": {Scope.ENROLL, Scope.VERIFY},
            "verify": {Scope.VERIFY},
            "identify": {Scope.IDENTIFY},
        }.items():
            new = self.create(f"test-{name}", scopes)
            self.tokens[name] = new.token
            self.ids[name] = new.key.key_id

    def create(self, name: str, scopes: set[Scope]) -> api_keys.NewKey:
        with psycopg.connect(self.live.settings.database_dsn(), autocommit=True) as conn:
            return api_keys.create_key(conn, name=name, scopes=scopes)

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}


@pytest.fixture(scope="module")
def keys(live: LiveStack) -> Keys:
    return Keys(live)


@pytest.fixture
def http(live: LiveStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.gateway_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def photos(faces: Path) -> dict[str, list[Path]]:
    root = faces / "identities"
    return {p.name: sorted(p.iterdir()) for p in sorted(root.iterdir()) if p.is_dir()}


def files(field: str, paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def unique(name: str) -> str:
    return f"gw-{name}-{uuid4().hex[:8]}"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["code"] == code, body
    assert body["type"] == f"/problems/{code}" and body["title"] and body["detail"]
    return body


def enroll(http: httpx.Client, token: dict[str, str], user: str, paths: list[Path]) -> dict:
    response = http.post(
        "/v1/enrollments",
        params={"wait": 60},
        headers=token,
        data={"user_id": user},
        files=files("images", paths),
    )
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    assert job["status"] == "succeeded", job
    return job


def read_http_reply(sock: socket.socket) -> str:
    """One whole HTTP/1.1 response (headers and a Content-Length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")),
        0,
    )  # fmt: skip
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode(errors="replace")


def probe_keys(live: LiveStack) -> set[str]:
    prefix = "probes/" + datetime.now(UTC).strftime("%Y/%m/%d")
    return set(live.client.store.list_keys(prefix))


def job_rows(live: LiveStack, user: str) -> list[tuple[Any, ...]]:
    return live.sql("SELECT job_id, api_key_id FROM jobs WHERE user_id = %s", user)


# --- the whole flow ---------------------------------------------------------------------------


def test_enroll_then_verify_with_wait_over_http(
    live: LiveStack, keys: Keys, http: httpx.Client, photos: dict[str, list[Path]]
) -> None:
    person = "obama"
    user = unique(person)
    token = keys.auth("enroll_verify")
    enrolled = enroll(http, token, user, photos[person][:-1])
    assert enrolled["kind"] == "enroll" and enrolled["user_id"] == user
    assert len(enrolled["result"]["templates"]) == len(photos[person][:-1]) + 1

    response = http.post(
        "/v1/verifications",
        params={"wait": 30},
        headers=token,
        data={"user_id": user},
        files=files("image", photos[person][-1:]),
    )
    assert response.status_code == 200, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['job_id']}"
    verdict = response.json()
    assert verdict["status"] == "succeeded" and verdict["result"]["decision"] == "accept"

    # Every job row and audit entry records the key that submitted it (never the secret).
    for job in (enrolled, verdict):
        rows = live.sql("SELECT api_key_id FROM jobs WHERE job_id = %s", job["job_id"])
        assert rows == [(keys.ids["enroll_verify"],)]
        audit = live.sql("SELECT api_key_id FROM audit_log WHERE job_id = %s", job["job_id"])
        assert audit and all(row == (keys.ids["enroll_verify"],) for row in audit)
        assert job["api_key_id"] == keys.ids["enroll_verify"]

    # Decisions and reason codes, but no raw liveness score, for a key without admin...
    text = json.dumps(verdict)
    assert "spoof_score" not in text
    assert verdict["result"]["liveness"]["checked"] is True
    assert "reasons" in verdict["result"]
    own = http.get(f"/v1/jobs/{verdict['job_id']}", headers=token).json()
    assert "spoof_score" not in json.dumps(own) and own["result"]["decision"] == "accept"
    # ...while an admin sees the scores.
    admin = http.get(f"/v1/jobs/{verdict['job_id']}", headers=keys.auth("admin")).json()
    assert isinstance(admin["result"]["probe"]["liveness"]["spoof_score"], float)

    # Another non-admin key does not see this job at all.
    other = http.get(f"/v1/jobs/{verdict['job_id']}", headers=keys.auth("verify"))
    assert_problem(other, 404, "not_found")

    # The user's enrollment state: counts and dates per model version, no embeddings.
    state = http.get(f"/v1/users/{user}", headers=keys.auth("admin"))
    assert state.status_code == 200, state.text
    (version,) = state.json()["enrollments"]
    assert version["image_templates"] == len(photos[person][:-1])
    assert version["mean_template"] is True and version["active_model_version"] is True
    assert "embedding" not in state.text


def test_json_bodies_take_object_keys_already_in_the_bucket(
    live: LiveStack, keys: Keys, http: httpx.Client, photos: dict[str, list[Path]]
) -> None:
    person = "biden"
    user = unique(person)
    uploaded = [
        live.client.upload_image(p.read_bytes(), prefix=f"enroll/{user}") for p in photos[person]
    ]
    token = keys.auth("enroll_verify")
    submitted = http.post(
        "/v1/enrollments", headers=token, json={"user_id": user, "image_keys": uploaded[:1]}
    )
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["status"] == "queued"
    job_url = submitted.headers["location"]
    done = http.get(job_url, params={"wait": 60}, headers=token).json()
    assert done["status"] == "succeeded", done
    verdict = http.post(
        "/v1/verifications",
        params={"wait": 30},
        headers=token,
        json={"user_id": user, "image_key": uploaded[1]},
    ).json()
    assert verdict["result"]["decision"] == "accept", verdict


def test_identification_and_quality_scan(
    live: LiveStack, keys: Keys, http: httpx.Client, photos: dict[str, list[Path]]
) -> None:
    user = unique("rose")
    enroll(http, keys.auth("admin"), user, photos["rose_leslie"][:-1])
    found = http.post(
        "/v1/identifications",
        params={"wait": 30},
        headers=keys.auth("identify"),
        data={"top_k": "3"},
        files=files("image", photos["rose_leslie"][-1:]),
    )
    assert found.status_code == 200, found.text
    result = found.json()["result"]
    # The session's gallery holds this face under many ids (other tests enroll it too), so
    # which of them rank first is not this test's business: the search ran and answered.
    assert found.json()["status"] == "succeeded" and len(result["candidates"]) == 3
    assert result["decision"] == "match"
    assert all(c["user_id"] and isinstance(c["score"], float) for c in result["candidates"])
    assert "spoof_score" not in found.text

    scan = http.post(
        "/v1/quality-scans",
        params={"wait": 30},
        headers=keys.auth("admin"),
        files=files("images", photos["obama"][:2]),
    )
    assert scan.status_code == 200, scan.text
    assert scan.json()["kind"] == "quality_scan" and scan.json()["status"] == "succeeded"
    # quality scans need admin
    refused = http.post(
        "/v1/quality-scans",
        headers=keys.auth("identify"),
        files=files("images", photos["obama"][:1]),
    )
    assert_problem(refused, 403, "insufficient_scope")


def test_erasure_over_http(
    live: LiveStack, keys: Keys, http: httpx.Client, photos: dict[str, list[Path]]
) -> None:
    user = unique("kit")
    admin = keys.auth("admin")
    enroll(http, admin, user, photos["kit_harington"][:1])
    erased = http.delete(f"/v1/users/{user}", params={"wait": 30}, headers=admin)
    assert erased.status_code == 200, erased.text
    assert erased.json()["kind"] == "delete_user" and erased.json()["status"] == "succeeded"
    assert_problem(http.get(f"/v1/users/{user}", headers=admin), 404, "unknown_user")
    assert_problem(
        http.delete(f"/v1/users/{user}", headers=keys.auth("enroll_verify")),
        403,
        "insufficient_scope",
    )


# --- idempotency ------------------------------------------------------------------------------


def test_idempotency_key_same_body_same_job_other_body_refused(
    live: LiveStack, keys: Keys, http: httpx.Client, photos: dict[str, list[Path]]
) -> None:
    token = {**keys.auth("enroll_verify"), "Idempotency-Key": f"login-{uuid4()}"}
    user = unique("idem")
    body = {"data": {"user_id": user}, "files": files("image", photos["obama"][:1])}
    first = http.post("/v1/verifications", headers=token, **body)  # type: ignore[arg-type]
    again = http.post("/v1/verifications", headers=token, **body)  # type: ignore[arg-type]
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert first.json()["job_id"] == again.json()["job_id"]
    # The structured-field form ("...") of the same key names the same job.
    quoted = {**token, "Idempotency-Key": f'"{token["Idempotency-Key"]}"'}
    assert (
        http.post("/v1/verifications", headers=quoted, **body).json()["job_id"]
        == (  # type: ignore[arg-type]
            first.json()["job_id"]
        )
    )
    other_image = http.post(
        "/v1/verifications",
        headers=token,
        data={"user_id": user},
        files=files("image", photos["obama"][1:2]),
    )
    reused = assert_problem(other_image, 422, "idempotency_key_reused")
    assert reused["job_id"] == first.json()["job_id"]
    other_field = http.post(
        "/v1/verifications",
        headers=token,
        data={"user_id": user, "liveness": "false"},
        files=files("image", photos["obama"][:1]),
    )
    assert_problem(other_field, 422, "idempotency_key_reused")
    # Keys are scoped per API key: another tenant's identical key is another job.
    theirs = {**keys.auth("verify"), "Idempotency-Key": token["Idempotency-Key"]}
    separate = http.post("/v1/verifications", headers=theirs, **body)  # type: ignore[arg-type]
    assert separate.status_code == 202 and separate.json()["job_id"] != first.json()["job_id"]
    assert len(job_rows(live, user)) == 2


def test_twenty_concurrent_requests_with_one_key_make_one_job(
    live: LiveStack, keys: Keys, photos: dict[str, list[Path]]
) -> None:
    user = unique("race")
    headers = {**keys.auth("enroll_verify"), "Idempotency-Key": f"race-{uuid4()}"}
    image = photos["alex_lacamoire"][0].read_bytes()
    before = probe_keys(live)
    start = threading.Barrier(20)

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=live.gateway_url, timeout=120) as client:
            start.wait()
            return client.post(
                "/v1/verifications",
                headers=headers,
                data={"user_id": user},
                files={"image": ("p.jpg", image, "image/jpeg")},
            )

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(send, range(20)))
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert len(job_rows(live, user)) == 1
    # The losers of the race removed their uploads: exactly one new probe object.
    assert len(probe_keys(live) - before) == 1


# --- authentication, scopes, limits ----------------------------------------------------------


def test_missing_invalid_and_revoked_keys_are_401_missing_scope_403(
    live: LiveStack, keys: Keys, http: httpx.Client, photos: dict[str, list[Path]]
) -> None:
    job = "/v1/jobs/00000000-0000-0000-0000-000000000000"
    missing = assert_problem(http.get(job), 401, "unauthenticated")
    assert missing["detail"] and http.get(job).headers["www-authenticate"].startswith("Bearer")
    assert_problem(
        http.get(job, headers={"Authorization": "Bearer fa_nope_nope"}), 401, "unauthenticated"
    )
    wrong_secret = keys.tokens["verify"].rsplit("_", 1)[0] + "_wrong"
    assert_problem(http.get(job, headers={"X-API-Key": wrong_secret}), 401, "unauthenticated")
    # X-API-Key works as well as the bearer token
    assert_problem(http.get(job, headers={"X-API-Key": keys.tokens["verify"]}), 404, "not_found")

    forbidden = http.post(
        "/v1/enrollments",
        headers=keys.auth("verify"),
        data={"user_id": "someone"},
        files=files("images", photos["obama"][:1]),
    )
    body = assert_problem(forbidden, 403, "insufficient_scope")
    assert body["required_scope"] == "enroll"
    assert_problem(
        http.get("/v1/users/someone", headers=keys.auth("verify")), 403, "insufficient_scope"
    )

    # Revocation takes effect on the very next request (no key caching).
    new = keys.create("to-revoke", {Scope.VERIFY})
    token = {"Authorization": f"Bearer {new.token}"}
    assert_problem(http.get(job, headers=token), 404, "not_found")  # authenticated
    with psycopg.connect(live.settings.database_dsn(), autocommit=True) as conn:
        assert api_keys.revoke_key(conn, new.key.key_id)
    assert_problem(http.get(job, headers=token), 401, "unauthenticated")


def test_apikey_cli_create_list_revoke(
    cli: CliRunner, live: LiveStack, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.cli import build_app
    from shared.config import get_settings

    app = build_app()
    created = cli.invoke(app, ["apikey", "create", "--name", "cli", "--scope", "verify", "--json"])
    assert created.exit_code == 0, created.output
    new = json.loads(created.stdout)
    assert new["token"].startswith(f"fa_{new['key_id']}_") and new["webhook_secret"] is None
    listed = cli.invoke(app, ["apikey", "list", "--json"])
    row = next(r for r in json.loads(listed.stdout) if r["key_id"] == new["key_id"])
    assert row["scopes"] == ["verify"] and "token" not in row and row["revoked_at"] is None
    assert new["token"].rsplit("_", 1)[1] not in listed.stdout  # the secret is never listed

    # SSRF: a loopback callback is refused unless private networks are allowed (dev only).
    refused = cli.invoke(
        app, ["apikey", "create", "--name", "hook", "--scope", "verify",
              "--callback-url", "http://127.0.0.1:9/hook"],
    )  # fmt: skip
    assert refused.exit_code == 2 and "loopback" in refused.output
    monkeypatch.setenv("FACEAUTH_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
    get_settings.cache_clear()
    hooked = cli.invoke(
        app, ["apikey", "create", "--name", "hook", "--scope", "verify",
              "--callback-url", "http://127.0.0.1:9/hook", "--json"],
    )  # fmt: skip
    assert hooked.exit_code == 0, hooked.output
    assert json.loads(hooked.stdout)["webhook_secret"].startswith("whsec_")

    token = {"Authorization": f"Bearer {new['token']}"}
    job = "/v1/jobs/00000000-0000-0000-0000-000000000000"
    assert http.get(job, headers=token).status_code == 404
    revoked = cli.invoke(app, ["apikey", "revoke", new["key_id"]])
    assert revoked.exit_code == 0, revoked.output
    assert_problem(http.get(job, headers=token), 401, "unauthenticated")
    assert cli.invoke(app, ["apikey", "revoke", new["key_id"]]).exit_code == 1


def test_rate_limit_per_key_answers_429_with_retry_after(live: LiveStack, keys: Keys) -> None:
    url = live.stack.start_gateway(
        name="gateway-limited", extra_env={"FACEAUTH_GATEWAY_RATE_LIMIT": "3/minute"}
    )
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            job = "/v1/jobs/00000000-0000-0000-0000-000000000000"
            answers = [http.get(job, headers=keys.auth("verify")) for _ in range(4)]
            assert [a.status_code for a in answers] == [404, 404, 404, 429]
            assert_problem(answers[-1], 429, "rate_limited")
            assert 1 <= int(answers[-1].headers["retry-after"]) <= 60
            # per key: another key still has its own budget
            assert http.get(job, headers=keys.auth("identify")).status_code == 404
    finally:
        live.stack.stop_gateway("gateway-limited")


def test_failed_verifications_of_a_user_are_limited(
    live: LiveStack, keys: Keys, http: httpx.Client, photos: dict[str, list[Path]]
) -> None:
    """The default limit: 5 failed verifications (reject, liveness_failed) in 15 minutes."""
    user = unique("grind")
    enroll(http, keys.auth("admin"), user, photos["obama"][:1])
    impostors = [p for person, ps in photos.items() if person != "obama" for p in ps]
    failures = 0
    for probe in impostors:
        answer = http.post(
            "/v1/verifications",
            params={"wait": 30},
            headers=keys.auth("verify"),
            data={"user_id": user},
            files=files("image", [probe]),
        )
        if answer.status_code == 429:
            break
        assert answer.status_code == 200, answer.text
        if answer.json()["result"]["decision"] in ("reject", "liveness_failed"):
            failures += 1
    else:
        pytest.fail("no 429 after every impostor photo")
    assert failures == 5
    limited = assert_problem(answer, 429, "too_many_failed_verifications")
    assert "Retry-After" in answer.headers and int(answer.headers["retry-after"]) > 800
    assert limited["detail"]
    # other users are not affected
    other = http.post(
        "/v1/verifications",
        headers=keys.auth("verify"),
        data={"user_id": unique("other")},
        files=files("image", impostors[:1]),
    )
    assert other.status_code == 202, other.text


# --- bodies -----------------------------------------------------------------------------------


def test_oversize_upload_is_refused_while_streaming_with_bounded_memory(
    live: LiveStack, keys: Keys, http: httpx.Client
) -> None:
    """200 MB streamed as one image part: 413 at the per-image limit (15 MB), the gateway
    process grows by far less than the body, and nothing is stored."""
    boundary = "gatewaytestboundary"
    total = 200 * MB
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="user_id"\r\n\r\nbig\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"'
            "\r\nContent-Type: image/jpeg\r\n\r\n"
        ).encode()
        yield head + b"\xff\xd8\xff\xe0" + b"\0" * 60
        chunk = b"\0" * MB
        while sent < total:
            sent += len(chunk)
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    process = psutil.Process(live.gateway.pid)
    rss_before = process.memory_info().rss
    peak = rss_before
    done = threading.Event()

    def sample() -> None:  # the peak, not just the end: freed buffers shrink RSS again
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    before = probe_keys(live)
    try:
        response = http.post(
            "/v1/verifications",
            headers={
                **keys.auth("verify"),
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            content=body(),
        )
    finally:
        done.set()
        sampler.join()
    grown = peak - rss_before
    problem = assert_problem(response, 413, "image_too_large")
    assert problem["errors"][0]["field"] == "image"
    assert sent == total  # the client did send it all (the gateway drained, not dropped)
    assert grown < 50 * MB, f"gateway RSS peaked {grown / MB:.0f} MB above where it was"
    assert probe_keys(live) == before
    assert live.sql("SELECT count(*) FROM jobs WHERE user_id = 'big'") == [(0,)]
    # the connection was drained, not wedged: the gateway keeps answering
    assert http.get("/healthz").status_code == 200


def test_request_size_limit_counts_the_whole_body(
    live: LiveStack, keys: Keys, http: httpx.Client
) -> None:
    """Four 14 MB images (each under the image limit) pass the 50 MB request limit: 413
    request_too_large, counted while streaming; a declared Content-Length is refused upfront."""
    boundary = "sizeboundary"

    def body() -> Iterator[bytes]:
        for i in range(4):
            yield (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="images";'
                    f' filename="{i}.jpg"\r\n\r\n'
                ).encode()
                + b"\xff\xd8\xff\xe0"
                + b"\0" * (14 * MB)
                + b"\r\n"
            )
        yield f"--{boundary}--\r\n".encode()

    headers = {**keys.auth("admin"), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = http.post("/v1/quality-scans", headers=headers, content=body())
    assert_problem(response, 413, "request_too_large")
    # Declared too large: answered from the headers alone, before any body byte is sent.
    host, port = live.gateway_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            (
                "POST /v1/quality-scans HTTP/1.1\r\n"
                f"Host: {host}\r\nAuthorization: Bearer {keys.tokens['admin']}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {live.settings.gateway_max_request_bytes + 1}\r\n\r\n"
            ).encode()
        )
        reply = read_http_reply(sock)
    assert reply.startswith("HTTP/1.1 413 "), reply
    assert '"code":"request_too_large"' in reply


def test_malformed_wrong_type_and_unknown_fields_are_coded_problems(
    live: LiveStack, keys: Keys, http: httpx.Client, faces: Path, photos: dict[str, list[Path]]
) -> None:
    token = keys.auth("enroll_verify")
    image = photos["obama"][0]
    # not multipart/JSON
    assert_problem(
        http.post(
            "/v1/verifications", headers={**token, "Content-Type": "text/plain"}, content=b"hi"
        ),
        415,
        "unsupported_media_type",
    )
    # multipart that is not well-formed
    broken = http.post(
        "/v1/verifications",
        headers={**token, "Content-Type": "multipart/form-data; boundary=xyz"},
        content=b'--xyz\r\nContent-Disposition: form-data; name="user_id"\r\n\r\nbob\r\n--xyz',
    )
    assert_problem(broken, 400, "malformed_request")
    assert_problem(
        http.post(
            "/v1/verifications",
            headers={**token, "Content-Type": "multipart/form-data"},
            content=b"--x--",
        ),
        400,
        "malformed_request",
    )
    # a file that is not an image (magic bytes), even when it claims to be one
    text_file = http.post(
        "/v1/verifications",
        headers=token,
        data={"user_id": "bob"},
        files={
            "image": ("notes.jpg", b"these are not the pixels you are looking for", "image/jpeg")
        },
    )
    assert assert_problem(text_file, 415, "unsupported_media_type")["errors"][0]["field"] == "image"
    declared_text = http.post(
        "/v1/verifications",
        headers=token,
        data={"user_id": "bob"},
        files={"image": ("x.txt", image.read_bytes(), "text/plain")},
    )
    assert_problem(declared_text, 415, "unsupported_media_type")
    # unknown fields, multipart and JSON
    unknown_form = http.post(
        "/v1/verifications",
        headers=token,
        data={"user_id": "bob", "threshold": "0.1"},
        files=files("image", [image]),
    )
    body = assert_problem(unknown_form, 422, "invalid_payload")
    assert body["errors"] == [
        {"field": "threshold", "message": "unknown field", "type": "extra_forbidden"}
    ]
    unknown_json = http.post(
        "/v1/verifications",
        headers=token,
        json={"user_id": "bob", "image_key": "probes/x.jpg", "threshold": 0.1},
    )
    body = assert_problem(unknown_json, 422, "invalid_payload")
    assert [e["field"] for e in body["errors"]] == ["threshold"]
    # bad field values
    bad = http.post(
        "/v1/verifications", headers=token, json={"user_id": "../etc", "image_key": "a/../b"}
    )
    assert {e["field"] for e in assert_problem(bad, 422, "invalid_payload")["errors"]} == {
        "user_id",
        "image_key",
    }
    assert_problem(
        http.post(
            "/v1/verifications", headers={**token, "Content-Type": "application/json"}, content=b"{"
        ),
        400,
        "malformed_request",
    )
    missing_image = http.post("/v1/verifications", headers=token, data={"user_id": "bob"}, files={})
    assert missing_image.status_code in (415, 422), missing_image.text
    too_many = http.post(
        "/v1/enrollments",
        headers=token,
        data={"user_id": "bob"},
        files=files("images", [image] * 4),
    )
    assert_problem(too_many, 422, "too_many_images")
    assert_problem(
        http.get(
            "/v1/jobs/00000000-0000-0000-0000-000000000000", params={"wait": -1}, headers=token
        ),
        422,
        "invalid_payload",
    )
    assert_problem(http.get("/v1/jobs/not-a-uuid", headers=token), 422, "invalid_payload")
    assert live.sql("SELECT count(*) FROM jobs WHERE user_id = 'bob'") == [(0,)]


# --- outages ----------------------------------------------------------------------------------


def test_postgres_down_is_503_and_leaves_nothing_half_written(
    live: LiveStack, keys: Keys, http: httpx.Client, photos: dict[str, list[Path]]
) -> None:
    """Postgres stops after the key was checked, while the image streams in: the upload
    happens, the job row cannot be written, the upload is removed, the answer is 503."""
    user = unique("outage")
    boundary = "outageboundary"
    image = photos["obama"][0].read_bytes()

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="user_id"\r\n\r\n{user}\r\n'
        ).encode()
        time.sleep(1.0)  # the gateway has authenticated the key by now
        live.stack.stop_postgres()
        yield (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="images";'
                ' filename="p.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
            ).encode()
            + image
            + f"\r\n--{boundary}--\r\n".encode()
        )

    try:
        response = http.post(
            "/v1/enrollments",
            headers={
                **keys.auth("enroll_verify"),
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            content=body(),
        )
        assert_problem(response, 503, "database_unavailable")
        assert int(response.headers["retry-after"]) > 0
        # while it is down: requests are 503 within seconds, readiness says which part is down
        started = time.monotonic()
        assert_problem(
            http.get("/v1/jobs/00000000-0000-0000-0000-000000000000", headers=keys.auth("verify")),
            503,
            "database_unavailable",
        )
        assert time.monotonic() - started < 10
        ready = assert_problem(http.get("/readyz"), 503, "database_unavailable")
        assert ready["checks"]["postgres"] != "ok" and ready["checks"]["s3"] == "ok"
    finally:
        live.stack.start_postgres()
    assert job_rows(live, user) == []
    assert live.client.store.list_keys(f"enroll/{user}/") == []  # the upload was removed
    deadline = time.monotonic() + 30
    while http.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "gateway not ready again after Postgres came back"
        time.sleep(0.2)


# --- operations -------------------------------------------------------------------------------


def test_health_metrics_docs_and_problem_types(keys: Keys, http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json()["checks"] == {"postgres": "ok", "redis": "ok", "s3": "ok"}
    # metrics: admin only; labelled by route template
    assert_problem(http.get("/metrics"), 401, "unauthenticated")
    assert_problem(http.get("/metrics", headers=keys.auth("verify")), 403, "insufficient_scope")
    http.get("/v1/jobs/00000000-0000-0000-0000-000000000000", headers=keys.auth("verify"))
    metrics = http.get("/metrics", headers=keys.auth("admin"))
    assert metrics.status_code == 200
    assert 'route="/v1/jobs/{job_id}",status="404"' in metrics.text
    assert "faceauth_gateway_request_seconds_bucket" in metrics.text
    # docs: any valid key; a browser is asked for basic auth (the token as password)
    refused = http.get("/docs")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    docs = http.get("/docs", auth=("anyone", keys.tokens["verify"]))
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = http.get("/openapi.json", auth=("anyone", keys.tokens["verify"])).json()
    assert "/v1/verifications" in spec["paths"]
    problem = http.get("/problems/rate_limited").json()
    assert problem == {
        "type": "/problems/rate_limited",
        "code": "rate_limited",
        "status": 429,
        "title": "Too many requests for this API key",
    }


def test_redis_or_s3_down_is_503_before_anything_is_written(
    live: LiveStack, keys: Keys, http: httpx.Client, photos: dict[str, list[Path]]
) -> None:
    """Redis down: submissions are refused before any upload or job row (the message could
    not be sent), reads still work. S3 down: the upload fails, no job row."""
    token = keys.auth("enroll_verify")
    image = files("image", photos["obama"][:1])
    live.stack.stop_redis()
    try:
        user = unique("noredis")
        refused = http.post(
            "/v1/verifications",
            headers={**token, "Idempotency-Key": f"{user}-1"},
            data={"user_id": user},
            files=image,
        )
        assert_problem(refused, 503, "broker_unavailable")
        job = "/v1/jobs/00000000-0000-0000-0000-000000000000"
        assert_problem(http.get(job, headers=token), 404, "not_found")  # reads go on
        assert_problem(http.get("/readyz"), 503, "broker_unavailable")
    finally:
        live.stack.start_redis()
    assert job_rows(live, user) == []
    # The same Idempotency-Key works once Redis is back: nothing held it.
    accepted = http.post(
        "/v1/verifications",
        headers={**token, "Idempotency-Key": f"{user}-1"},
        data={"user_id": user},
        files=image,
    )
    assert accepted.status_code == 202, accepted.text

    live.stack.stop_s3()
    try:
        user = unique("nos3")
        refused = http.post("/v1/verifications", headers=token, data={"user_id": user}, files=image)
        assert_problem(refused, 503, "storage_unavailable")
    finally:
        live.stack.start_s3()
    assert job_rows(live, user) == []
