"""A user's templates as JSON or Parquet (the enrollment prototype's artifacts).

Embeddings are written as plain float lists so any tool can read them back. This is
biometric data: the files are created with mode 0600 and are the caller's to protect.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector

from shared.db.templates import as_array, user_template_rows


def user_templates(
    conn: psycopg.Connection, user_id: str, *, include_inactive: bool = False
) -> list[dict[str, Any]]:
    register_vector(conn)
    rows = user_template_rows(conn, user_id, include_inactive=include_inactive)
    return [
        {
            "template_id": str(r[0]),
            "user_id": r[1],
            "embedding": [float(x) for x in as_array(r[2])],
            "is_mean_template": bool(r[3]),
            "model_name": r[4],
            "model_version": r[5],
            "quality": r[6],
            "source_image_key": r[7],
            "is_active": bool(r[8]),
            "created_at": r[9].isoformat(),
        }
        for r in rows
    ]


def _private(path: Path) -> None:
    path.touch(mode=0o600, exist_ok=True)
    os.chmod(path, 0o600)


def write_json(records: list[dict[str, Any]], path: Path) -> None:
    _private(path)
    path.write_text(json.dumps(records, indent=2))


def write_parquet(records: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**r, "quality": json.dumps(r["quality"])} for r in records]
    table = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("template_id", pa.string()),
                ("user_id", pa.string()),
                ("embedding", pa.list_(pa.float32())),
                ("is_mean_template", pa.bool_()),
                ("model_name", pa.string()),
                ("model_version", pa.string()),
                ("quality", pa.string()),  # JSON text: its keys differ between rows
                ("source_image_key", pa.string()),
                ("is_active", pa.bool_()),
                ("created_at", pa.string()),
            ]
        ),
    )
    _private(path)
    pq.write_table(table, path)
