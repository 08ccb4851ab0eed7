"""Backfill sources: CSV / JSONL manifests and S3 prefixes, read as a stream of rows.

A row names one user and the images to enroll them with. Image references are
either local files (uploaded by the backfill) or object keys already in the
bucket. Rows that cannot be used are yielded as ``BadRow`` with a stable error
code, never raised, so one broken line does not stop a million-row run.

CSV: a header with ``user_id`` and either an ``images`` column (references separated by
``;`` or ``|``) or one or more ``image*`` columns (``image``, ``image1``, ``image_2``...).
JSONL: one object a line, ``{"user_id": "...", "images": ["...", ...]}`` (or ``"image"``).

Reference rules, in order: ``s3://<bucket>/<key>`` is a key (the bucket must be the
configured one); ``file://<path>``, an absolute path, or a path that exists relative to
the manifest's folder is a local file; anything else that is a valid key is a key.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shared.errors import ErrorCode
from shared.schemas import IMAGE_KEY_PATTERN, USER_ID_PATTERN

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
_SPLIT_RE = re.compile(r"[;|]")
_IMAGE_COLUMN_RE = re.compile(r"^image_?\d*$", re.IGNORECASE)
_USER_RE = re.compile(USER_ID_PATTERN)
_KEY_RE = re.compile(IMAGE_KEY_PATTERN)


class ManifestError(ValueError):
    """The source as a whole is unusable (unknown format, no ``user_id`` column...)."""


@dataclass(frozen=True)
class ImageRef:
    kind: Literal["file", "key"]
    value: str  # absolute path for files, object key for keys


@dataclass(frozen=True)
class ManifestRow:
    line: int  # 1-based line (CSV/JSONL) or ordinal (S3 prefix): where to look in the source
    user_id: str
    images: tuple[ImageRef, ...]
    refs: tuple[str, ...]  # the references as written: they make the idempotency key


@dataclass(frozen=True)
class BadRow:
    line: int
    user_id: str | None
    code: ErrorCode
    message: str


Row = ManifestRow | BadRow


def is_valid_key(key: str) -> bool:
    return bool(_KEY_RE.match(key)) and all(p not in ("", ".", "..") for p in key.split("/"))


def resolve_ref(ref: str, *, base_dir: Path, bucket: str) -> ImageRef | BadRow:
    """Classify one reference; a ``BadRow`` (line 0, filled in by the caller) when unusable."""
    ref = ref.strip()
    if ref.startswith("s3://"):
        ref_bucket, _, key = ref[5:].partition("/")
        if ref_bucket != bucket:
            return BadRow(
                0, None, ErrorCode.INVALID_PAYLOAD, f"{ref!r} is not in bucket {bucket!r}"
            )
        if not is_valid_key(key):
            return BadRow(0, None, ErrorCode.INVALID_PAYLOAD, f"{ref!r} is not a valid key")
        return ImageRef("key", key)
    explicit_file = ref.startswith("file://")
    path = Path(ref[7:] if explicit_file else ref).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if path.is_file():
        return ImageRef("file", str(path.resolve()))
    if explicit_file or Path(ref).expanduser().is_absolute():
        return BadRow(0, None, ErrorCode.IMAGE_NOT_FOUND, f"no local file {ref!r}")
    if is_valid_key(ref):
        return ImageRef("key", ref)
    return BadRow(0, None, ErrorCode.INVALID_PAYLOAD, f"{ref!r} is neither a file nor a key")


class _SeenUsers:
    """User ids met so far, as 8-byte digests: a million users cost tens of MB, not hundreds."""

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def add(self, user_id: str) -> bool:
        """True when ``user_id`` is new."""
        digest = int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "big")
        if digest in self._seen:
            return False
        self._seen.add(digest)
        return True


def build_row(
    line: int,
    user_id: Any,
    refs: Iterable[Any],
    *,
    base_dir: Path,
    bucket: str,
    seen: _SeenUsers | None = None,
) -> Row:
    """Validate one row's fields; the first problem found makes it a ``BadRow``."""
    if not isinstance(user_id, str) or not _USER_RE.match(user_id):
        shown = user_id if isinstance(user_id, str) else type(user_id).__name__
        return BadRow(line, None, ErrorCode.INVALID_PAYLOAD, f"invalid user_id {shown!r}")
    refs = list(refs)
    if any(not isinstance(r, str) for r in refs):
        return BadRow(line, user_id, ErrorCode.INVALID_PAYLOAD, "image references must be text")
    ref_list = [r.strip() for r in refs if r.strip()]
    if not ref_list:
        return BadRow(line, user_id, ErrorCode.TOO_FEW_IMAGES, "the row names no image")
    if seen is not None and not seen.add(user_id):
        return BadRow(
            line, user_id, ErrorCode.INVALID_PAYLOAD, "user_id appears earlier in the source"
        )
    images: list[ImageRef] = []
    for ref in ref_list:
        resolved = resolve_ref(ref, base_dir=base_dir, bucket=bucket)
        if isinstance(resolved, BadRow):
            return BadRow(line, user_id, resolved.code, resolved.message)
        images.append(resolved)
    return ManifestRow(line, user_id, tuple(images), tuple(ref_list))


def _csv_refs(record: dict[str, Any], image_columns: list[str]) -> list[Any]:
    if "images" in record:
        return _SPLIT_RE.split(record["images"] or "")
    return [record.get(col) or "" for col in image_columns]


def read_csv(path: Path, *, bucket: str) -> Iterator[Row]:
    seen = _SeenUsers()
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        reader.fieldnames = fields
        image_columns = [f for f in fields if _IMAGE_COLUMN_RE.match(f)]
        if "user_id" not in fields or ("images" not in fields and not image_columns):
            raise ManifestError(
                f"{path}: the header needs 'user_id' and 'images' (or image1, image2...)"
                f" columns, found {fields}"
            )
        for record in reader:
            line = reader.line_num
            if None in record:  # more cells than header columns
                yield BadRow(line, None, ErrorCode.INVALID_PAYLOAD, "more cells than columns")
                continue
            user_id = (record.get("user_id") or "").strip()
            yield build_row(
                line,
                user_id,
                _csv_refs(record, image_columns),
                base_dir=path.parent,
                bucket=bucket,
                seen=seen,
            )


def read_jsonl(path: Path, *, bucket: str) -> Iterator[Row]:
    seen = _SeenUsers()
    with path.open(encoding="utf-8") as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                yield BadRow(line, None, ErrorCode.INVALID_PAYLOAD, f"not JSON ({exc.msg})")
                continue
            if not isinstance(record, dict):
                yield BadRow(line, None, ErrorCode.INVALID_PAYLOAD, "not a JSON object")
                continue
            refs = record.get("images", record.get("image", []))
            if isinstance(refs, str):
                refs = [refs]
            if not isinstance(refs, list):
                yield BadRow(
                    line, None, ErrorCode.INVALID_PAYLOAD, "'images' must be a list of text"
                )
                continue
            yield build_row(
                line, record.get("user_id"), refs, base_dir=path.parent, bucket=bucket, seen=seen
            )


def read_prefix_keys(keys: Iterable[str], prefix: str, *, max_images: int) -> Iterator[Row]:
    """Group ``<prefix>/<user_id>/<image>`` keys (sorted) into one row per user.

    Keys that are not images are ignored; a user folder with more than ``max_images``
    images is enrolled with the first ``max_images`` by key order (the rest are listed
    nowhere else, so a bigger folder is not an error).
    """
    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    ordinal = 0
    current: str | None = None
    bucket_keys: list[str] = []

    def flush() -> Row:
        assert current is not None
        if not _USER_RE.match(current):
            return BadRow(ordinal, None, ErrorCode.INVALID_PAYLOAD, f"invalid user_id {current!r}")
        chosen = tuple(sorted(bucket_keys)[:max_images])
        bad = [k for k in chosen if not is_valid_key(k)]
        if bad:
            return BadRow(ordinal, current, ErrorCode.INVALID_PAYLOAD, f"invalid key {bad[0]!r}")
        return ManifestRow(ordinal, current, tuple(ImageRef("key", k) for k in chosen), chosen)

    for key in keys:
        rest = key[len(base) :] if key.startswith(base) else None
        if rest is None or Path(rest).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        user_id, sep, _name = rest.partition("/")
        if not sep:
            continue  # an image directly under the prefix belongs to no user
        if user_id != current:
            if current is not None:
                yield flush()
            ordinal += 1
            current, bucket_keys = user_id, []
        bucket_keys.append(key)
    if current is not None:
        yield flush()


def read_manifest(path: Path, *, bucket: str) -> Iterator[Row]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path, bucket=bucket)
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(path, bucket=bucket)
    raise ManifestError(f"{path}: unknown manifest type {suffix!r} (use .csv or .jsonl)")


def count_rows(path: Path) -> int:
    """Approximate row count for the progress bar (one fast pass over the bytes)."""
    lines = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
        fh.seek(0, 2)
        if fh.tell():
            fh.seek(-1, 2)
            lines += fh.read(1) != b"\n"
    return max(lines - (1 if path.suffix.lower() == ".csv" else 0), 0)
