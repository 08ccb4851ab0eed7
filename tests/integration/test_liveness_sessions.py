"""Liveness sessions and attempt limits on the real stack: frames through the queue to a
worker with the shipped MiniFASNet and face pack, sessions and counters in Postgres, and
the HTTP gateway in front.

Frames: the identity photos and pad/live/image_T1.jpg score live with the shipped model
(spoof scores <= 0.06 for those used here), pad/replay/image_F2.jpg scores 0.999.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest

from shared.db import api_keys
from shared.db import liveness_sessions as session_repo
from shared.db.api_keys import Scope
from shared.errors import FaceauthError
from shared.producer import NewLivenessSession
from shared.schemas import JobKind, JobView

from .conftest import DELIVERY_ENV, LiveStack

pytestmark = pytest.mark.integration

COOLDOWN_S = float(DELIVERY_ENV["FACEAUTH_ATTEMPT_COOLDOWN_S"])


@pytest.fixture(scope="module")
def pad(faces: Path) -> dict[str, Path]:
    return {
        "live": faces / "pad" / "live" / "image_T1.jpg",
        "replay": faces / "pad" / "replay" / "image_F2.jpg",
    }


@pytest.fixture(scope="module")
def people(faces: Path) -> dict[str, list[Path]]:
    root = faces / "identities"
    return {p.name: sorted(p.iterdir()) for p in sorted(root.iterdir()) if p.is_dir()}


def unique(name: str) -> str:
    return f"ls-{name}-{uuid4().hex[:8]}"


def enroll(live: LiveStack, user: str, photos: list[Path]) -> None:
    job = live.client.wait(
        live.client.submit_enrollment(user, [p.read_bytes() for p in photos]), timeout=120
    )
    assert job.status == "succeeded", job.error


def check(live: LiveStack, session: NewLivenessSession, frames: list[Path | bytes]) -> JobView:
    data = [f if isinstance(f, bytes) else f.read_bytes() for f in frames]
    job_id = live.client.submit_liveness_check(session.session.session_id, session.nonce, data)
    return live.client.wait(job_id, timeout=120)


def verify(live: LiveStack, user: str, image: bytes | None = None, **kw: Any) -> JobView:
    return live.client.wait(live.client.submit_verification(user, image, **kw), timeout=120)


def decided(job: JobView) -> dict[str, Any]:
    assert job.status == "succeeded", job.error
    assert job.result is not None
    return job.result


def failed_with(job: JobView, code: str) -> dict[str, Any]:
    assert job.status == "failed" and job.error is not None, job
    assert job.error["code"] == code, job.error
    assert job.result is not None
    return job.result


def session_row(live: LiveStack, session_id: UUID) -> dict[str, Any]:
    with psycopg.connect(live.settings.database_dsn(), autocommit=True) as conn:
        cur = conn.execute(
            "SELECT status, attempts, probe_image_key, frame_keys, consumed_by_job, user_id"
            " FROM liveness_sessions WHERE session_id = %s",
            (session_id,),
        )
        row = cur.fetchone()
        assert row is not None and cur.description is not None
        return dict(zip([c.name for c in cur.description], row, strict=True))


def audit(live: LiveStack, job_id: UUID) -> list[tuple[Any, ...]]:
    return live.sql(
        "SELECT event, details FROM audit_log WHERE job_id = %s ORDER BY audit_id", job_id
    )


def failures_of(live: LiveStack, user: str) -> int | None:
    rows = live.sql("SELECT consecutive_failures FROM attempt_counters WHERE user_id = %s", user)
    return int(rows[0][0]) if rows else None  # type: ignore[call-overload]


# --- sessions through the producer -----------------------------------------------------------


def test_live_frames_pass_and_back_exactly_one_verification(
    live: LiveStack, people: dict[str, list[Path]]
) -> None:
    user = unique("obama")
    enroll(live, user, people["obama"][:1])
    session = live.client.create_liveness_session(user_id=user)
    assert session.session.status == "open" and session.session.attempts_left == 3
    assert len(session.nonce) >= 40

    job = check(live, session, people["obama"])
    result = decided(job)
    assert result["decision"] == "live" and result["passed"] is True and result["reasons"] == []
    assert result["session"]["status"] == "passed" and result["session"]["attempts"] == 1
    assert result["liveness"]["aggregate"] == "upper_median"
    assert result["liveness"]["spoof_score"] <= result["liveness"]["threshold"]
    assert all(
        f["similarity_to_reference"] >= result["same_person"]["threshold"] for f in result["frames"]
    )
    probe = result["probe_image_key"]
    assert probe.startswith(f"enroll/{user}/liveness/")  # erased with the user
    row = session_row(live, session.session.session_id)
    assert row["status"] == "passed" and row["probe_image_key"] == probe
    (refs,) = live.sql("SELECT image_refs FROM jobs WHERE job_id = %s", job.job_id)[0]
    assert row["frame_keys"] == refs and probe in refs
    ((event, details),) = audit(live, job.job_id)
    assert event == "liveness_check" and details["decision"] == "live"
    assert isinstance(details["spoof_score"], float) and len(details["frame_spoof_scores"]) == 3

    # A passed session takes no more frames.
    failed_with(check(live, session, people["obama"][:1]), "session_used")

    # The verification's probe is the session's frame; liveness is not scored again.
    first = decided(verify(live, user, liveness_session_id=session.session.session_id))
    assert first["decision"] == "accept"
    assert first["probe"]["image_key"] == probe and "liveness" not in first["probe"]
    assert first["liveness"] == {
        "checked": True,
        "source": "liveness_session",
        "liveness_session_id": str(session.session.session_id),
    }
    row = session_row(live, session.session.session_id)
    assert row["status"] == "consumed" and row["consumed_by_job"] is not None
    ((_, vdetails),) = audit(live, row["consumed_by_job"])
    assert vdetails["liveness_session_id"] == str(session.session.session_id)

    # ...and it backs no second one.
    again = verify(live, user, liveness_session_id=session.session.session_id)
    failed_with(again, "session_used")


def test_a_replayed_frame_fails_the_session(live: LiveStack, pad: dict[str, Path]) -> None:
    session = live.client.create_liveness_session()  # anonymous
    # The live and the replayed photo show the same person: the frames agree on the face,
    # the replay's spoof score decides (upper median of two).
    result = decided(check(live, session, [pad["live"], pad["replay"]]))
    assert result["decision"] == "spoof" and result["passed"] is False
    assert [r["code"] for r in result["reasons"]] == ["spoof_suspected"]
    assert result["probe_image_key"] is None
    assert (
        min(f["similarity_to_reference"] for f in result["frames"])
        >= result["same_person"]["threshold"]
    )
    assert result["session"]["status"] == "open" and result["session"]["attempts_left"] == 2
    assert session_row(live, session.session.session_id)["probe_image_key"] is None

    result = decided(check(live, session, [pad["replay"]]))
    assert result["decision"] == "spoof"
    # A session that did not pass backs no verification.
    failed_with(
        verify(live, unique("nobody"), liveness_session_id=session.session.session_id),
        "session_not_passed",
    )


def test_frames_of_two_people_fail_with_faces_differ(
    live: LiveStack, people: dict[str, list[Path]]
) -> None:
    session = live.client.create_liveness_session()
    frames = [people["obama"][0], people["obama"][1], people["biden"][0]]
    result = decided(check(live, session, frames))
    assert result["decision"] == "faces_differ" and result["passed"] is False
    assert [r["code"] for r in result["reasons"]] == ["session_faces_differ"]
    sims = [f["similarity_to_reference"] for f in result["frames"]]
    assert sims[2] < result["same_person"]["threshold"] <= min(sims[:2])
    assert result["session"]["attempts"] == 1


def test_expired_unknown_and_wrong_nonce_sessions_have_their_own_codes(
    live: LiveStack, people: dict[str, list[Path]]
) -> None:
    short = live.client.create_liveness_session(ttl_s=1)
    time.sleep(1.5)
    failed_with(check(live, short, people["obama"][:1]), "session_expired")
    assert session_row(live, short.session.session_id)["attempts"] == 0

    # A client may tighten the configured limits, never loosen them.
    long = live.client.create_liveness_session(ttl_s=10**6, max_attempts=100)
    assert long.session.max_attempts == live.settings.liveness_session_max_attempts
    life = (long.session.expires_at - long.session.created_at).total_seconds()
    assert life == pytest.approx(live.settings.liveness_session_ttl_s, abs=1)

    wrong = NewLivenessSession(long.session, "x" * 43)
    failed_with(check(live, wrong, people["obama"][:1]), "session_not_found")
    with pytest.raises(FaceauthError) as refused:  # refused before anything is uploaded
        live.client.submit_liveness_check(uuid4(), "y" * 43, [b"frame"])
    assert refused.value.code == "session_not_found"
    # A message naming an unknown session (another producer's) ends with the same code.
    job_id = live.client.submit(
        JobKind.LIVENESS_CHECK,
        {"session_id": str(uuid4()), "nonce": "z" * 43, "image_keys": ["nowhere/x.jpg"]},
    )
    failed_with(live.client.wait(job_id, timeout=60), "session_not_found")
    # A session bound to a user takes frames only as that user's job.
    mine = live.client.create_liveness_session(user_id=unique("owner"))
    job_id = live.client.submit(
        JobKind.LIVENESS_CHECK,
        {"session_id": str(mine.session.session_id), "nonce": mine.nonce,
         "image_keys": ["nowhere/x.jpg"], "user_id": unique("intruder")},
    )  # fmt: skip
    failed_with(live.client.wait(job_id, timeout=60), "session_user_mismatch")


def test_the_attempt_cap_holds_and_bad_input_uses_no_attempt(
    live: LiveStack, pad: dict[str, Path], people: dict[str, list[Path]]
) -> None:
    session = live.client.create_liveness_session(max_attempts=2)
    assert session.session.max_attempts == 2
    # Bad input is refused with its own code and uses no attempt.
    failed_with(check(live, session, [b"not an image at all"]), "image_undecodable")
    too_many = [people["obama"][0]] * (live.settings.liveness_session_max_frames + 1)
    failed_with(check(live, session, too_many), "too_many_images")
    assert session_row(live, session.session.session_id)["attempts"] == 0

    assert decided(check(live, session, [pad["replay"]]))["session"]["attempts_left"] == 1
    last = decided(check(live, session, [pad["replay"]]))
    assert last["decision"] == "spoof" and last["session"]["status"] == "failed"
    assert last["session"]["attempts_left"] == 0
    # Over the cap: even live frames of the right person are refused.
    failed_with(check(live, session, people["obama"][:1]), "session_attempts_exhausted")
    assert session_row(live, session.session.session_id)["attempts"] == 2


def test_cooldown_starts_after_consecutive_failures_and_ends(
    live: LiveStack, pad: dict[str, Path], people: dict[str, list[Path]]
) -> None:
    limit = live.settings.attempt_max_failures
    assert limit == 5
    user = unique("cool")
    enroll(live, user, people["obama"][:1])
    impostor = people["biden"][0].read_bytes()
    genuine = people["obama"][1].read_bytes()

    # Bad input is not a decision about the person: it does not count.
    failed_with(verify(live, user, b"garbage"), "image_undecodable")
    assert failures_of(live, user) is None
    # A success resets the count.
    assert decided(verify(live, user, impostor))["decision"] == "reject"
    assert failures_of(live, user) == 1
    assert decided(verify(live, user, genuine))["decision"] == "accept"
    assert failures_of(live, user) == 0

    # Verification and liveness failures count together.
    for _ in range(limit - 2):
        result = decided(verify(live, user, impostor))
        assert result["decision"] == "reject" and "cooldown" not in result
    spoofed = live.client.create_liveness_session(user_id=user)
    assert decided(check(live, spoofed, [pad["replay"]]))["decision"] == "spoof"
    last = decided(check(live, spoofed, [pad["replay"]]))
    assert last["decision"] == "spoof"
    assert last["cooldown"] == {"started": True, "retry_after": int(COOLDOWN_S)}
    rows = live.sql(
        "SELECT details FROM audit_log WHERE user_id = %s AND event = 'attempts_cooldown_started'",
        user,
    )
    assert len(rows) == 1
    details = rows[0][0]
    assert isinstance(details, dict) and details["failures"] == limit
    assert details["last_failure"] == "liveness_check:spoof"

    # During the cool-down: verifications and liveness checks of the user are refused.
    refused = failed_with(verify(live, user, genuine), "too_many_attempts")
    assert 1 <= refused["details"]["retry_after"] <= COOLDOWN_S
    fresh = live.client.create_liveness_session(user_id=user)
    failed_with(check(live, fresh, people["obama"][1:2]), "too_many_attempts")
    assert session_row(live, fresh.session.session_id)["attempts"] == 0
    # Another user is not affected.
    other = unique("other")
    enroll(live, other, people["obama"][:1])
    assert decided(verify(live, other, genuine))["decision"] == "accept"

    time.sleep(COOLDOWN_S + 0.5)
    assert decided(verify(live, user, genuine))["decision"] == "accept"
    assert failures_of(live, user) == 0
    # The fresh session (no attempt used while refused) now passes.
    assert decided(check(live, fresh, people["obama"][1:]))["decision"] == "live"


def test_a_session_is_used_once_even_by_concurrent_verifications(
    live: LiveStack, people: dict[str, list[Path]]
) -> None:
    user = unique("race")
    enroll(live, user, people["obama"][:1])
    session = live.client.create_liveness_session(user_id=user)
    assert decided(check(live, session, people["obama"][1:]))["decision"] == "live"
    sid = session.session.session_id
    jobs = [live.client.submit_verification(user, liveness_session_id=sid) for _ in range(3)]
    outcomes = [live.client.wait(job_id, timeout=120) for job_id in jobs]
    accepted = [j for j in outcomes if j.status == "succeeded"]
    assert len(accepted) == 1 and accepted[0].result is not None
    assert accepted[0].result["decision"] == "accept"
    for job in outcomes:
        if job is not accepted[0]:
            failed_with(job, "session_used")
    assert session_row(live, sid)["consumed_by_job"] == accepted[0].job_id

    # The guard is the database's: a second consumption, or an attempt on a decided session,
    # changes nothing, whoever reads the session first.
    with psycopg.connect(live.settings.database_dsn(), autocommit=True) as conn:
        assert session_repo.consume(conn, sid, job_id=uuid4(), user_id=user) is None
        assert (
            session_repo.record_attempt(
                conn, sid, job_id=uuid4(), passed=True, probe_image_key="x",
                frame_keys=["x"], decision="live", reasons=[],
            )
            is None
        )  # fmt: skip
        other = live.client.create_liveness_session(user_id=unique("someone"))
        assert session_repo.get_session(conn, other.session.session_id) is not None
        assert (
            session_repo.consume(conn, other.session.session_id, job_id=uuid4(), user_id=user)
            is None  # open, not passed; and another user's
        )
    assert session_row(live, sid)["consumed_by_job"] == accepted[0].job_id


# --- the HTTP gateway ------------------------------------------------------------------------


class Tokens:
    def __init__(self, live: LiveStack) -> None:
        self.headers: dict[str, dict[str, str]] = {}
        with psycopg.connect(live.settings.database_dsn(), autocommit=True) as conn:
            for name, scopes in {
                "verify": {Scope.VERIFY},
                "other": {Scope.VERIFY},
                "identify": {Scope.IDENTIFY},
                "admin": {Scope.ADMIN},
            }.items():
                new = api_keys.create_key(conn, name=f"ls-{name}", scopes=scopes)
                self.headers[name] = {"Authorization": f"Bearer {new.token}"}


@pytest.fixture(scope="module")
def tokens(live: LiveStack) -> Tokens:
    return Tokens(live)


@pytest.fixture
def http(live: LiveStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.gateway_url, timeout=120) as client:
        yield client


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def test_sessions_over_http(
    live: LiveStack, tokens: Tokens, http: httpx.Client, people: dict[str, list[Path]]
) -> None:
    user = unique("http")
    enroll(live, user, people["obama"][:1])
    created = http.post(
        "/v1/liveness/sessions",
        headers=tokens.headers["verify"],
        json={"user_id": user, "channel": "web"},
    )
    assert created.status_code == 201, created.text
    session = created.json()
    sid, nonce = session["session_id"], session["nonce"]
    assert created.headers["location"] == f"/v1/liveness/sessions/{sid}"
    assert (
        session["status"] == "open" and session["channel"] == "web" and session["user_id"] == user
    )

    # Reading it never shows the nonce; another key (or a key without the scope) sees nothing.
    read = http.get(f"/v1/liveness/sessions/{sid}", headers=tokens.headers["verify"])
    assert read.status_code == 200 and "nonce" not in read.json()
    problem(
        http.get(f"/v1/liveness/sessions/{sid}", headers=tokens.headers["other"]),
        404,
        "session_not_found",
    )
    problem(
        http.get(f"/v1/liveness/sessions/{sid}", headers=tokens.headers["identify"]),
        403,
        "insufficient_scope",
    )
    problem(
        http.post(f"/v1/liveness/sessions/{sid}/frames", headers=tokens.headers["other"],
                  data={"nonce": nonce}, files=[("frames", ("a.jpg", b"x", "image/jpeg"))]),
        404, "session_not_found",
    )  # fmt: skip
    bad_channel = http.post(
        "/v1/liveness/sessions", headers=tokens.headers["verify"], json={"channel": "Not One"}
    )
    problem(bad_channel, 422, "invalid_payload")

    frames = [("frames", (p.name, p.read_bytes(), "image/jpeg")) for p in people["obama"]]
    answer = http.post(
        f"/v1/liveness/sessions/{sid}/frames",
        params={"wait": 60},
        headers=tokens.headers["verify"],
        data={"nonce": nonce},
        files=frames,
    )
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["kind"] == "liveness_check" and job["status"] == "succeeded"
    assert job["result"]["decision"] == "live" and job["result"]["liveness"]["channel"] == "web"
    # Decisions and reason codes for the client; the raw spoof scores for admins only.
    assert "spoof_score" not in json.dumps(job)
    admin = http.get(f"/v1/jobs/{job['job_id']}", headers=tokens.headers["admin"]).json()
    assert isinstance(admin["result"]["liveness"]["spoof_score"], float)
    assert all(isinstance(f["liveness"]["spoof_score"], float) for f in admin["result"]["frames"])
    state = http.get(f"/v1/liveness/sessions/{sid}", headers=tokens.headers["verify"]).json()
    assert state["status"] == "passed" and state["last_decision"] == "live"

    # Verify with the session: no image; the other key may not use it.
    problem(
        http.post("/v1/verifications", headers=tokens.headers["other"],
                  json={"user_id": user, "liveness_session_id": sid}),
        404, "session_not_found",
    )  # fmt: skip
    problem(
        http.post("/v1/verifications", headers=tokens.headers["verify"], json={"user_id": user}),
        422, "invalid_payload",
    )  # fmt: skip
    verified = http.post(
        "/v1/verifications",
        params={"wait": 60},
        headers=tokens.headers["verify"],
        json={"user_id": user, "liveness_session_id": sid},
    )
    assert verified.status_code == 200, verified.text
    result = verified.json()["result"]
    assert result["decision"] == "accept"
    assert result["probe"]["image_key"] == job["result"]["probe_image_key"]
    again = http.post(
        "/v1/verifications",
        params={"wait": 60},
        headers=tokens.headers["verify"],
        json={"user_id": user, "liveness_session_id": sid},
    ).json()
    assert again["status"] == "failed" and again["error"]["code"] == "session_used"
    state = http.get(f"/v1/liveness/sessions/{sid}", headers=tokens.headers["verify"]).json()
    assert state["status"] == "consumed" and state["consumed_by_job"] == verified.json()["job_id"]


def test_a_cooldown_is_429_at_the_gateway(
    live: LiveStack, tokens: Tokens, http: httpx.Client, pad: dict[str, Path]
) -> None:
    user = unique("http-cool")
    replay = [("frames", (pad["replay"].name, pad["replay"].read_bytes(), "image/jpeg"))]
    fails = 0
    while fails < live.settings.attempt_max_failures:
        made = http.post(
            "/v1/liveness/sessions", headers=tokens.headers["verify"], json={"user_id": user}
        ).json()
        for _ in range(made["max_attempts"]):
            answer = http.post(
                f"/v1/liveness/sessions/{made['session_id']}/frames",
                params={"wait": 60},
                headers=tokens.headers["verify"],
                data={"nonce": made["nonce"]},
                files=replay,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["result"]["decision"] == "spoof"
            fails += 1
            if fails == live.settings.attempt_max_failures:
                break
    assert answer.json()["result"]["cooldown"]["started"] is True
    fresh = http.post(
        "/v1/liveness/sessions", headers=tokens.headers["verify"], json={"user_id": user}
    ).json()
    refused = http.post(
        f"/v1/liveness/sessions/{fresh['session_id']}/frames",
        headers=tokens.headers["verify"],
        data={"nonce": fresh["nonce"]},
        files=replay,
    )
    body = problem(refused, 429, "too_many_attempts")
    assert 1 <= int(refused.headers["retry-after"]) <= COOLDOWN_S and body["retry_after"] >= 1
    verify_refused = http.post(
        "/v1/verifications",
        headers=tokens.headers["verify"],
        data={"user_id": user},
        files=[("image", (pad["live"].name, pad["live"].read_bytes(), "image/jpeg"))],
    )
    problem(verify_refused, 429, "too_many_attempts")
    time.sleep(COOLDOWN_S + 0.5)
    state = http.get(
        f"/v1/liveness/sessions/{fresh['session_id']}", headers=tokens.headers["verify"]
    ).json()
    assert state["attempts"] == 0  # the refused request made no job and used no attempt
