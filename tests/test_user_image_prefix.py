"""A user's enrollment images live under one prefix: producers upload there, erasure lists it."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from shared.backfill.keys import upload_key
from shared.producer import FaceauthClient
from shared.schemas import JobKind
from shared.storage import user_image_prefix

JPEG = b"\xff\xd8\xff" + b"\x00" * 16


class FakeStore:
    def __init__(self, keys: list[str] | None = None) -> None:
        self.put_keys: list[str] = []
        self.listed: list[str] = []
        self._keys = keys or []

    def put(self, key: str, data: bytes, content_type: str = "") -> str:
        self.put_keys.append(key)
        return key

    def list_keys(self, prefix: str) -> list[str]:
        self.listed.append(prefix)
        return [k for k in self._keys if k.startswith(prefix)]


def test_prefix_is_the_user_folder_under_enroll() -> None:
    assert user_image_prefix("alice") == "enroll/alice/"
    # A user id that is a prefix of another does not share its folder.
    assert not user_image_prefix("alice2").startswith(user_image_prefix("alice"))


def test_client_enrollment_uploads_under_the_prefix() -> None:
    client = FaceauthClient.__new__(FaceauthClient)  # no servers: only the upload path runs
    store = FakeStore()
    client.store = store  # type: ignore[assignment]
    submitted: list[dict[str, Any]] = []

    def fake_submit(
        kind: JobKind, payload: dict[str, Any], *, idempotency_key: str | None, origin: Any = None
    ) -> tuple[UUID, bool]:
        submitted.append(payload)
        return uuid4(), True

    client._submit = fake_submit  # type: ignore[method-assign]
    client.submit_enrollment("alice", [JPEG, JPEG])
    assert len(store.put_keys) == 2
    assert all(k.startswith(user_image_prefix("alice")) for k in store.put_keys)
    assert submitted[0]["image_keys"] == store.put_keys


def test_backfill_upload_key_is_under_the_prefix_and_content_addressed() -> None:
    key = upload_key("bob", JPEG, ".jpg")
    assert key.startswith(user_image_prefix("bob"))
    assert key.endswith(".jpg")
    assert upload_key("bob", JPEG, ".jpg") == key
    assert upload_key("bob", JPEG + b"x", ".jpg") != key


def test_erasure_lists_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.pipeline import deletion

    monkeypatch.setattr("shared.db.templates.source_image_keys", lambda conn, user: {"t/1.jpg"})
    monkeypatch.setattr("shared.db.jobs.image_refs_of_user", lambda conn, user: {"probes/2.jpg"})
    monkeypatch.setattr(
        "shared.db.liveness_sessions.frame_keys_of_user", lambda conn, user: {"frames/3.jpg"}
    )
    uploaded = upload_key("carol", JPEG, ".jpg")
    store = FakeStore([uploaded, "enroll/carol2/x.jpg", "enroll/other/y.jpg"])
    keys = deletion.candidate_keys(object(), store, "carol")  # type: ignore[arg-type]
    assert store.listed == [user_image_prefix("carol")]
    assert keys == {uploaded, "t/1.jpg", "probes/2.jpg", "frames/3.jpg"}
