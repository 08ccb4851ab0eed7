"""Where a backfill's rows come from: a manifest file or an S3 prefix laid out per user."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shared.backfill.manifest import (
    ManifestError,
    Row,
    count_rows,
    read_manifest,
    read_prefix_keys,
)
from shared.config import Settings
from shared.storage import ImageStore


@dataclass(frozen=True)
class Source:
    rows: Iterator[Row]
    total: int | None
    default_outcome_path: Path


def open_source(source: str, settings: Settings, *, max_images: int | None = None) -> Source:
    """A manifest path (.csv / .jsonl) or ``s3://<bucket>/<prefix>`` laid out per user."""
    if source.startswith("s3://"):
        bucket, _, prefix = source[5:].partition("/")
        if bucket != settings.s3_bucket:
            raise ManifestError(
                f"{source}: only the configured bucket {settings.s3_bucket!r} can be enrolled from"
            )
        prefix = prefix.strip("/")
        store = ImageStore.from_settings(settings)
        # The listing is held in memory (about 100 bytes a key) to sort and count it.
        keys = sorted(store.list_keys(f"{prefix}/" if prefix else ""))
        users = {k[len(prefix) + 1 if prefix else 0 :].partition("/")[0] for k in keys}
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", prefix) or "bucket"
        return Source(
            rows=read_prefix_keys(
                keys, prefix, max_images=max_images or settings.enroll_max_images
            ),
            total=len(users),
            default_outcome_path=Path(f"backfill-{slug}.outcomes.jsonl"),
        )
    path = Path(source)
    if not path.is_file():
        raise ManifestError(f"{source}: no such manifest file")
    return Source(
        rows=read_manifest(path, bucket=settings.s3_bucket),
        total=count_rows(path),
        default_outcome_path=path.with_name(path.name + ".outcomes.jsonl"),
    )


def chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    """``rows`` in lists of ``size`` (the last one shorter), read lazily."""
    it = iter(rows)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
