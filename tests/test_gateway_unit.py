"""The HTTP gateway's pure parts, without a server: what it imports, the committed OpenAPI
document, redaction of liveness scores, fingerprints, the wait schedule, the streaming
multipart reader and the body-size limit. The real-stack tests are in
tests/integration/test_gateway.py."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway import bodylimit, fingerprint, redact, uploads, waiting
from gateway.openapi import OPENAPI_FILE, render
from gateway.problems import PROBLEM_TYPES, Problem
from shared.errors import ErrorCode
from shared.paths import REPO_ROOT
from shared.schemas import JobKind, JobStatus, JobView

JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 40
MEDIA = "unsupported_media_type"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 40

# --- what the gateway imports -------------------------------------------------------------------

FORBIDDEN_MODULES = ("onnxruntime", "insightface", "torch", "cv2", "workers")


def test_building_the_app_imports_no_model_runtime_and_no_worker_code() -> None:
    script = (
        "import json, sys\n"
        "from gateway.app import create_app\n"
        "from shared.config import Settings\n"
        "app = create_app(Settings())\n"
        "app.openapi()\n"
        "import gateway.cli, gateway.server\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_MODULES!r})\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_committed_openapi_document_is_in_step_with_the_code() -> None:
    assert OPENAPI_FILE.read_text() == render(), "run: python -m gateway.openapi"


def test_openapi_errors_are_problem_details() -> None:
    doc = json.loads(OPENAPI_FILE.read_text())
    assert set(doc["paths"]) == {
        "/v1/enrollments",
        "/v1/verifications",
        "/v1/identifications",
        "/v1/quality-scans",
        "/v1/jobs/{job_id}",
        "/v1/users/{user_id}",
        "/v1/liveness/sessions",
        "/v1/liveness/sessions/{session_id}",
        "/v1/liveness/sessions/{session_id}/frames",
    }
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (path, status)
            assert operation["security"], (path, method)
    body = doc["paths"]["/v1/enrollments"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert body["application/json"]["schema"]["additionalProperties"] is False
    assert "HTTPValidationError" not in doc["components"]["schemas"]


# --- redaction ----------------------------------------------------------------------------------

VERIFY_RESULT: dict[str, Any] = {
    "decision": "liveness_failed",
    "score": 0.71,
    "liveness": {"checked": True, "model_name": "minifasnet", "threshold": 0.6},
    "probe": {
        "image_key": "probes/x.jpg",
        "passed": False,
        "quality": {"blur": 50.0, "spoof_score": 0.93},
        "liveness": {"spoof_score": 0.93, "threshold": 0.6, "scores": [0.9, 0.96]},
        "reasons": [
            {"code": "too_dark", "value": 12.0, "threshold": 25.0, "message": "too dark: 12"},
            {
                "code": "spoof_suspected",
                "value": 0.93,
                "threshold": 0.6,
                "message": "possible presentation attack: spoof score 0.930 > 0.6",
            },
        ],
    },
    "reasons": [{"code": "spoof_suspected", "value": 0.93, "message": "spoof score 0.930"}],
}


def test_non_admin_results_lose_every_spoof_score_but_keep_decisions_and_codes() -> None:
    stripped = redact.strip_spoof_scores(VERIFY_RESULT)
    text = json.dumps(stripped)
    assert "spoof_score" not in text and "0.93" not in text
    assert stripped["decision"] == "liveness_failed"
    assert stripped["score"] == 0.71  # the similarity is not a liveness score
    assert stripped["probe"]["liveness"] == {"threshold": 0.6}
    assert stripped["probe"]["quality"] == {"blur": 50.0}
    too_dark, spoof = stripped["probe"]["reasons"]
    assert too_dark == VERIFY_RESULT["probe"]["reasons"][0]  # other reasons keep their values
    assert spoof == {
        "code": "spoof_suspected",
        "threshold": 0.6,
        "message": "possible presentation attack",
    }
    assert stripped["reasons"] == [
        {"code": "spoof_suspected", "message": "possible presentation attack"}
    ]
    assert VERIFY_RESULT["probe"]["liveness"]["spoof_score"] == 0.93  # input untouched


def test_redaction_reaches_enrollment_images_and_failed_job_details() -> None:
    failed = {
        "code": "liveness_rejected",
        "details": {
            "images": [{"liveness": {"spoof_score": 0.8}, "quality": {"spoof_score": 0.8}}]
        },
    }
    assert redact.strip_spoof_scores(failed) == {
        "code": "liveness_rejected",
        "details": {"images": [{"liveness": {}, "quality": {}}]},
    }
    assert redact.strip_spoof_scores(None) is None
    assert redact.strip_spoof_scores([1, "a"]) == [1, "a"]


# --- fingerprints, keys, waiting ------------------------------------------------------------------


def test_fingerprint_covers_kind_fields_and_image_hashes() -> None:
    base = fingerprint.request_fingerprint(
        JobKind.VERIFY, {"user_id": "a", "liveness": True}, ["h"]
    )
    same = fingerprint.request_fingerprint(
        JobKind.VERIFY, {"liveness": True, "user_id": "a"}, ["h"]
    )
    assert base == same and len(base) == 64
    assert base != fingerprint.request_fingerprint(
        JobKind.VERIFY, {"user_id": "a", "liveness": False}, ["h"]
    )
    assert base != fingerprint.request_fingerprint(
        JobKind.VERIFY, {"user_id": "a", "liveness": True}, ["other"]
    )
    assert base != fingerprint.request_fingerprint(
        JobKind.IDENTIFY, {"user_id": "a", "liveness": True}, ["h"]
    )
    # An optional field left unset (e.g. one a later release added) is the same request.
    assert base == fingerprint.request_fingerprint(
        JobKind.VERIFY, {"user_id": "a", "liveness": True, "channel": None}, ["h"]
    )
    assert base != fingerprint.request_fingerprint(
        JobKind.VERIFY, {"user_id": "a", "liveness": True, "channel": "web"}, ["h"]
    )
    assert fingerprint.scoped_idempotency_key("k1", "x") != fingerprint.scoped_idempotency_key(
        "k2", "x"
    )


def test_wait_polls_every_20_ms_then_backs_off_to_250_ms() -> None:
    gen = waiting.poll_delays()
    delays = [next(gen) for _ in range(60)]
    assert delays[:25] == [0.02] * 25
    assert delays[25] == pytest.approx(0.03)
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert delays[-1] == 0.25


def _job(status: JobStatus) -> JobView:
    from uuid import uuid4

    return JobView(job_id=uuid4(), kind=JobKind.VERIFY, status=status)


def test_wait_returns_as_soon_as_the_job_finished_and_on_timeout() -> None:
    states = iter([JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED])
    reads = 0

    async def read() -> JobView:
        nonlocal reads
        reads += 1
        return _job(next(states))

    done = asyncio.run(waiting.wait_for_outcome(read, 5.0))
    assert done is not None and done.status == JobStatus.SUCCEEDED and reads == 3

    async def never() -> JobView:
        return _job(JobStatus.RUNNING)

    loop_time = asyncio.run(_timed(waiting.wait_for_outcome(never, 0.1)))
    assert 0.09 <= loop_time < 0.5


def test_a_wakeup_hint_cuts_the_pause_short() -> None:
    """With hints the polls are sparse (20 ms growing), yet a hint makes the next read
    immediate: the outcome is seen within milliseconds of being published."""
    from uuid import uuid4

    from gateway.wakeup import OutcomeWakeups

    wakeups = OutcomeWakeups("redis://unused")
    job_id = uuid4()
    finished = False

    async def read() -> JobView:
        return _job(JobStatus.SUCCEEDED if finished else JobStatus.RUNNING)

    async def scenario() -> float:
        nonlocal finished
        loop = asyncio.get_running_loop()
        with wakeups.watch(job_id) as woken:
            waiter = loop.create_task(waiting.wait_for_outcome(read, 10.0, woken=woken))
            await asyncio.sleep(0.6)  # the polls are 250 ms apart by now
            finished = True
            published = loop.time()
            wakeups._wake(f"celery-task-meta-{job_id}".encode())
            job = await waiter
            assert job is not None and job.status == JobStatus.SUCCEEDED
            return loop.time() - published

    assert asyncio.run(scenario()) < 0.05
    assert not wakeups._events  # the watch is gone with its block


async def _timed(coro: Any) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await coro
    return loop.time() - started


# --- multipart ------------------------------------------------------------------------------------

SPEC = uploads.FormSpec(
    text_fields=frozenset({"user_id", "liveness"}),
    file_field="images",
    max_files=2,
    max_image_bytes=1000,
)
BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def _part(name: str, data: bytes, filename: str | None = None, ctype: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    return head.encode() + b"\r\n" + data + b"\r\n"


def _body(*parts: bytes, close: bool = True) -> bytes:
    return b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


async def _chunks(body: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):  # small chunks: signatures split across reads
        yield body[i : i + size]


def _read(body: bytes, content_type: str = CONTENT_TYPE) -> uploads.Form:
    return asyncio.run(uploads.read_form(_chunks(body), content_type, SPEC))


def _problem(body: bytes, content_type: str = CONTENT_TYPE) -> Problem:
    with pytest.raises(Problem) as caught:
        _read(body, content_type)
    return caught.value


def test_form_fields_files_and_their_hashes() -> None:
    import hashlib

    form = _read(
        _body(
            _part("user_id", b"alice"),
            _part("images", JPEG, "a.jpg", "image/jpeg"),
            _part("images", PNG, "b.png"),  # no content type: the bytes decide
        )
    )
    assert form.fields == {"user_id": "alice"}
    assert [i.media_type for i in form.images] == ["image/jpeg", "image/png"]
    assert [i.data for i in form.images] == [JPEG, PNG]
    assert form.images[0].sha256 == hashlib.sha256(JPEG).hexdigest()


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (_body(_part("threshold", b"0.1")), 422, ErrorCode.INVALID_PAYLOAD, "threshold"),
        (_body(_part("user_id", b"a"), _part("user_id", b"b")), 422, "invalid_payload", "user_id"),
        (_body(*[_part("images", JPEG, "x.jpg")] * 3), 422, "too_many_images", "images"),
        (_body(_part("images", JPEG + b"\0" * 1000, "x.jpg")), 413, "image_too_large", "images"),
        (_body(_part("images", b"GIF89a" + b"\0" * 20, "x.gif")), 415, MEDIA, "images"),
        (_body(_part("images", b"\xff\xd8")), 415, MEDIA, "images"),
        (_body(_part("images", JPEG, "x.jpg", "text/plain")), 415, MEDIA, "images"),
        (_body(_part("user_id", b"x" * 2000)), 422, "invalid_payload", "user_id"),
        (_body(_part("user_id", b"\xff\xfe")), 422, "invalid_payload", "user_id"),
    ],
    ids=[
        "unknown-field", "duplicate-field", "too-many-files", "image-too-large", "gif",
        "too-short-to-be-an-image", "declared-text", "long-text", "not-utf8",
    ],
)  # fmt: skip
def test_form_violations_are_refused_at_the_part(
    body: bytes, status: int, code: str, field: str
) -> None:
    problem = _problem(body)
    assert (problem.status, str(problem.code)) == (status, str(code))
    assert problem.extra["errors"][0]["field"] == field


def test_malformed_multipart_is_400() -> None:
    assert _problem(_body(_part("user_id", b"a"), close=False)).code == "malformed_request"
    assert _problem(b"garbage without any boundary").code == "malformed_request"
    assert _problem(_body(), "multipart/form-data").code == "malformed_request"  # no boundary
    nameless = f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n".encode()
    assert _problem(_body(nameless)).code == "malformed_request"


def test_sniffing() -> None:
    assert uploads.sniff_image(JPEG[:12]) == "image/jpeg"
    assert uploads.sniff_image(b"RIFF\0\0\0\0WEBP") == "image/webp"
    assert uploads.sniff_image(b"RIFF\0\0\0\0WAVE") is None
    assert uploads.sniff_image(b"BM" + b"\0" * 10) == "image/bmp"
    assert uploads.sniff_image(b"<html>") is None


# --- body-size limit ------------------------------------------------------------------------------


async def _echo_length(request: Request) -> JSONResponse:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
    return JSONResponse({"bytes": total})


def _limited_app(max_bytes: int) -> Any:
    app = Starlette(routes=[Route("/", _echo_length, methods=["POST"])])
    app.add_exception_handler(Problem, lambda _r, exc: exc.response())  # type: ignore[arg-type, return-value]
    return bodylimit.BodyLimit(app, max_bytes=max_bytes)


def test_body_limit_counts_streamed_bytes_and_refuses_declared_sizes() -> None:
    client = TestClient(_limited_app(100))
    assert client.post("/", content=b"x" * 100).json() == {"bytes": 100}
    streamed = client.post("/", content=iter([b"x" * 60, b"x" * 60]))  # chunked, no length
    assert streamed.status_code == 413 and streamed.json()["code"] == "request_too_large"
    assert streamed.headers["content-type"] == "application/problem+json"
    declared = client.post("/", content=b"x" * 101)
    assert declared.status_code == 413 and declared.json()["code"] == "request_too_large"
    bad = client.post("/", content=b"x", headers={"content-length": "nope"})
    assert bad.status_code == 400 and bad.json()["code"] == "malformed_request"


# --- problems and keys ----------------------------------------------------------------------------


def test_problem_details_shape_and_types() -> None:
    body = Problem(ErrorCode.RATE_LIMITED, "slow down", headers={"Retry-After": "3"}).body()
    assert body == {
        "type": "/problems/rate_limited",
        "title": "Too many requests for this API key",
        "status": 429,
        "detail": "slow down",
        "code": "rate_limited",
    }
    for code, (status, title) in PROBLEM_TYPES.items():
        assert 400 <= status < 600 and title, code


def test_api_key_is_read_from_bearer_x_api_key_or_basic_password() -> None:
    from gateway.auth import presented_token

    def token(headers: dict[str, str]) -> str | None:
        scope = {
            "type": "http",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
        return presented_token(Request(scope))

    assert token({"Authorization": "Bearer fa_a_b"}) == "fa_a_b"
    assert token({"X-API-Key": "fa_a_b"}) == "fa_a_b"
    basic = base64.b64encode(b"me:fa_a_b").decode()
    assert token({"Authorization": f"Basic {basic}"}) == "fa_a_b"
    assert token({"Authorization": "Basic !!!"}) is None
    assert token({"Authorization": "Bearer "}) is None
    assert token({}) is None
