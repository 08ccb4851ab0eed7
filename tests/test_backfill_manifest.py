"""Backfill sources without servers: manifest parsing, reference rules, S3 layouts, keys."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import pytest

from shared.backfill.keys import idempotency_key
from shared.backfill.manifest import (
    BadRow,
    ImageRef,
    ManifestError,
    ManifestRow,
    count_rows,
    read_manifest,
    read_prefix_keys,
    resolve_ref,
)
from shared.backfill.outcomes import BackfillSummary, RowOutcome, RowStatus, is_retryable

BUCKET = "faceauth-images"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.png"):
        (folder / name).write_bytes(b"\xff\xd8\xff" + name.encode())
    return folder


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_images_column(tmp_path: Path, photos: Path) -> None:
    manifest = write(
        tmp_path / "m.csv",
        "user_id,images,comment\n"
        "alice,photos/a.jpg;photos/b.jpg,first\n"
        f"bob,{photos / 'c.png'}|s3://{BUCKET}/legacy/bob/1.jpg,abs and s3\n"
        "carol,legacy/carol/1.jpg,bare key\n",
    )
    rows = [r for r in read_manifest(manifest, bucket=BUCKET) if isinstance(r, ManifestRow)]
    assert len(rows) == 3
    alice, bob, carol = rows
    assert (alice.line, alice.user_id) == (2, "alice")
    assert alice.images == (
        ImageRef("file", str(photos / "a.jpg")),
        ImageRef("file", str(photos / "b.jpg")),
    )
    assert alice.refs == ("photos/a.jpg", "photos/b.jpg")  # as written: the key material
    assert bob.images == (
        ImageRef("file", str(photos / "c.png")),
        ImageRef("key", "legacy/bob/1.jpg"),
    )
    assert carol.images == (ImageRef("key", "legacy/carol/1.jpg"),)


def test_csv_with_numbered_image_columns_and_bad_rows(tmp_path: Path, photos: Path) -> None:
    manifest = write(
        tmp_path / "m.csv",
        "user_id,image1,image_2\n"
        "alice,photos/a.jpg,photos/b.jpg\n"
        "has space,photos/a.jpg,\n"
        "dave,,\n"
        "erin,/no/such/file.jpg,\n"
        "alice,photos/c.png,\n"
        "frank,s3://other-bucket/x.jpg,\n"
        "gina,../escape/x.jpg,\n"
        "hal,photos/a.jpg,photos/b.jpg,extra\n",
    )
    rows = list(read_manifest(manifest, bucket=BUCKET))
    assert isinstance(rows[0], ManifestRow) and len(rows[0].images) == 2
    bad = {r.line: r for r in rows if isinstance(r, BadRow)}
    assert {line: str(r.code) for line, r in bad.items()} == {
        3: "invalid_payload",  # user id with a space
        4: "too_few_images",
        5: "image_not_found",  # absolute path that does not exist
        6: "invalid_payload",  # alice again
        7: "invalid_payload",  # another bucket
        8: "invalid_payload",  # '..' is neither a file here nor a valid key
        9: "invalid_payload",  # more cells than columns
    }
    assert "earlier" in bad[6].message
    assert bad[5].user_id == "erin"


def test_csv_without_user_column_is_refused(tmp_path: Path) -> None:
    manifest = write(tmp_path / "m.csv", "user,images\nalice,a.jpg\n")
    with pytest.raises(ManifestError, match="user_id"):
        list(read_manifest(manifest, bucket=BUCKET))


def test_jsonl(tmp_path: Path, photos: Path) -> None:
    lines = [
        json.dumps({"user_id": "alice", "images": ["photos/a.jpg", "photos/b.jpg"]}),
        "",
        json.dumps({"user_id": "bob", "image": "photos/c.png"}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"user_id": 42, "images": ["photos/a.jpg"]}),
        json.dumps({"user_id": "carl", "images": "photos/a.jpg"}),
        json.dumps({"user_id": "dora", "images": [1, 2]}),
    ]
    manifest = write(tmp_path / "m.jsonl", "\n".join(lines) + "\n")
    rows = list(read_manifest(manifest, bucket=BUCKET))
    good = [r for r in rows if isinstance(r, ManifestRow)]
    assert [(r.line, r.user_id, len(r.images)) for r in good] == [
        (1, "alice", 2),
        (3, "bob", 1),
        (7, "carl", 1),
    ]
    bad = {r.line: str(r.code) for r in rows if isinstance(r, BadRow)}
    assert bad == {4: "invalid_payload", 5: "invalid_payload", 6: "invalid_payload",
                   8: "invalid_payload"}  # fmt: skip


def test_unknown_manifest_type(tmp_path: Path) -> None:
    with pytest.raises(ManifestError):
        read_manifest(write(tmp_path / "m.txt", "x"), bucket=BUCKET)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("s3://faceauth-images/a/b.jpg", ImageRef("key", "a/b.jpg")),
        ("a/b.jpg", ImageRef("key", "a/b.jpg")),
        ("s3://faceauth-images/a/../b.jpg", "invalid_payload"),
        ("file:///definitely/missing.jpg", "image_not_found"),
        ("has space.jpg", "invalid_payload"),
    ],
)
def test_reference_rules(tmp_path: Path, ref: str, expected: ImageRef | str) -> None:
    got = resolve_ref(ref, base_dir=tmp_path, bucket=BUCKET)
    if isinstance(expected, ImageRef):
        assert got == expected
    else:
        assert isinstance(got, BadRow) and str(got.code) == expected


def test_prefix_layout_groups_by_user_and_caps_images() -> None:
    keys = sorted(
        [
            "legacy/alice/1.jpg",
            "legacy/alice/2.jpg",
            "legacy/alice/3.jpg",
            "legacy/alice/4.jpg",
            "legacy/alice/notes.txt",
            "legacy/bob/sub/1.png",
            "legacy/stray.jpg",
            "legacy/bad user/1.jpg",
            "other/carol/1.jpg",
        ]
    )
    rows = list(read_prefix_keys(keys, "legacy/", max_images=3))
    good = {r.user_id: r for r in rows if isinstance(r, ManifestRow)}
    assert set(good) == {"alice", "bob"}
    assert [i.value for i in good["alice"].images] == [
        "legacy/alice/1.jpg",
        "legacy/alice/2.jpg",
        "legacy/alice/3.jpg",
    ]
    assert good["bob"].images == (ImageRef("key", "legacy/bob/sub/1.png"),)
    (bad,) = [r for r in rows if isinstance(r, BadRow)]
    assert str(bad.code) == "invalid_payload" and "bad user" in bad.message


def test_count_rows(tmp_path: Path) -> None:
    assert count_rows(write(tmp_path / "a.csv", "user_id,images\na,x\nb,y\n")) == 2
    assert count_rows(write(tmp_path / "b.csv", "user_id,images\na,x\nb,y")) == 2
    assert count_rows(write(tmp_path / "c.jsonl", '{"a":1}\n{"b":2}\n{"c":3}')) == 3


def test_idempotency_keys_are_stable_short_and_chained() -> None:
    key = idempotency_key("alice", ["a.jpg", "b.jpg"])
    assert key == idempotency_key("alice", ["a.jpg", "b.jpg"])
    assert key.startswith("backfill:") and len(key) <= 200
    assert key != idempotency_key("alice", ["b.jpg", "a.jpg"])
    assert key != idempotency_key("alicea.jpg", ["", "b.jpg"])  # separators matter
    failed_job = uuid4()
    retry = idempotency_key("alice", ["a.jpg", "b.jpg"], failed_job)
    assert retry != key and retry == idempotency_key("alice", ["a.jpg", "b.jpg"], failed_job)
    assert idempotency_key("u" * 128, ["k" * 500] * 3, failed_job).__len__() <= 200


def test_retryable_codes_and_summary() -> None:
    assert is_retryable("retries_exhausted") and is_retryable("broker_unavailable")
    assert not is_retryable("quality_rejected") and not is_retryable("user_deleted")
    summary = BackfillSummary()
    summary.add(RowOutcome(1, "a", RowStatus.ENROLLED, duplicate_of=[{"user_id": "b"}]))
    summary.add(RowOutcome(2, "b", RowStatus.ENROLLED))
    summary.add(RowOutcome(3, "c", RowStatus.REJECTED, code="no_face"))
    summary.add(RowOutcome(4, "d", RowStatus.REJECTED, code="no_face"))
    summary.add(RowOutcome(5, "e", RowStatus.FAILED, code="retries_exhausted"))
    summary.add(RowOutcome(6, "f", RowStatus.SKIPPED))
    data = summary.to_dict()
    assert (data["rows"], data["enrolled"], data["skipped"], data["duplicates_flagged"]) == (
        6,
        2,
        1,
        1,
    )
    assert data["rejected"] == {"no_face": 2} and data["failed"] == {"retries_exhausted": 1}
    line = json.loads(RowOutcome(3, "c", RowStatus.REJECTED, code="no_face").to_json())
    assert line == {"line": 3, "user_id": "c", "status": "rejected", "code": "no_face",
                    "new_job": False}  # fmt: skip
