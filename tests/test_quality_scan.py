"""Quality scan of real folders: rows, CSV/JSON/Parquet output, the table and the CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers_faces import (
    FACE_PACK_DIR,
    FACES_DIR,
    IDENTITIES_DIR,
    identity_photos,
    read_bgr,
    shared_pack,
)
from rich.console import Console
from typer.testing import CliRunner

from shared.config import Settings
from shared.errors import ErrorCode
from workers.cli.quality import app
from workers.inference.quality import QualityGate
from workers.pipeline.quality_scan import (
    COLUMNS,
    QualityRow,
    parquet_unavailable,
    reason_counts,
    render_table,
    scan_directory,
    scan_images,
    write_rows,
)

GATE = QualityGate(Settings())
PARQUET_PROBLEM = parquet_unavailable()
needs_parquet = pytest.mark.skipif(
    PARQUET_PROBLEM is not None, reason=f"Parquet cannot be written here: {PARQUET_PROBLEM}"
)


@pytest.fixture(scope="module")
def identity_rows() -> list[QualityRow]:
    return scan_directory(IDENTITIES_DIR, shared_pack(), GATE, progress=False)


@pytest.fixture
def mixed_dir(tmp_path: Path) -> Path:
    """A folder with a good photo, a group photo, broken files and a non-image file."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copyfile(IDENTITIES_DIR / "obama" / "obama.jpg", folder / "good.jpg")
    shutil.copyfile(FACES_DIR / "group" / "t1.jpg", folder / "sub" / "group.JPG")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    jpeg = (IDENTITIES_DIR / "biden" / "biden.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_scan_of_identities_gives_one_passing_row_per_photo(
    identity_rows: list[QualityRow],
) -> None:
    expected = [p.relative_to(IDENTITIES_DIR).as_posix() for _, p in identity_photos()]
    assert [r.path for r in identity_rows] == expected
    for row in identity_rows:
        assert row.face_count == 1 and row.passed and row.error is None, row
        assert row.reasons == "" and row.pose_source == "face_mesh"
        assert row.det_score is not None and row.det_score >= 0.5
        assert row.bbox_width is not None and row.bbox_width >= 90
    assert reason_counts(identity_rows) == {}


def test_rows_round_trip_through_csv_and_json(
    identity_rows: list[QualityRow], tmp_path: Path
) -> None:
    csv_path = write_rows(identity_rows, tmp_path / "out" / "scan.csv")
    json_path = write_rows(identity_rows, tmp_path / "scan.json")

    with csv_path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        csv_rows = list(reader)
    assert [r["path"] for r in csv_rows] == [r.path for r in identity_rows]
    assert all(r["passed"] == "True" and r["face_count"] == "1" for r in csv_rows)
    assert all(r["error"] == "" for r in csv_rows)
    assert [float(r["blur"]) for r in csv_rows] == [r.blur for r in identity_rows]

    loaded = json.loads(json_path.read_text(encoding="utf-8"))
    assert [QualityRow.model_validate(item) for item in loaded] == identity_rows


@needs_parquet
def test_rows_round_trip_through_parquet(identity_rows: list[QualityRow], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = write_rows(identity_rows, tmp_path / "scan.parquet")
    table = pq.read_table(path)
    assert tuple(table.column_names) == COLUMNS
    assert str(table.schema.field("blur").type) == "double"
    assert str(table.schema.field("face_count").type) == "int64"
    assert [QualityRow.model_validate(item) for item in table.to_pylist()] == identity_rows


def test_format_comes_from_the_suffix_or_the_argument(
    identity_rows: list[QualityRow], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="suffix"):
        write_rows(identity_rows, tmp_path / "scan.txt")
    with pytest.raises(ValueError, match="unknown output format"):
        write_rows(identity_rows, tmp_path / "scan.csv", "xlsx")
    written = write_rows(identity_rows, tmp_path / "scan.txt", "json")
    assert len(json.loads(written.read_text(encoding="utf-8"))) == len(identity_rows)


def test_unreadable_files_become_error_rows(mixed_dir: Path) -> None:
    rows = {r.path: r for r in scan_directory(mixed_dir, shared_pack(), GATE, progress=False)}
    # notes.txt is not an image and is skipped; the upper-case suffix in sub/ is not.
    assert sorted(rows) == ["broken.png", "empty.jpg", "good.jpg", "sub/group.JPG", "truncated.jpg"]
    assert rows["good.jpg"].passed and rows["good.jpg"].face_count == 1
    group = rows["sub/group.JPG"]
    assert (group.face_count, group.passed, group.reasons) == (6, False, "multiple_faces")
    assert group.blur is None  # no metrics unless exactly one face
    expected_errors = {
        "broken.png": ErrorCode.IMAGE_UNDECODABLE,
        "empty.jpg": ErrorCode.IMAGE_UNDECODABLE,
        "truncated.jpg": ErrorCode.IMAGE_TRUNCATED,
    }
    for name, code in expected_errors.items():
        row = rows[name]
        assert row.error == code and row.reasons == code, row
        assert row.face_count is None and not row.passed and row.messages
    counts = reason_counts(rows.values())
    assert counts == {"image_undecodable": 2, "image_truncated": 1, "multiple_faces": 1}
    flat = scan_directory(mixed_dir, shared_pack(), GATE, progress=False, recursive=False)
    assert "sub/group.JPG" not in {r.path for r in flat}


def test_scan_images_takes_bytes_or_decoded_arrays() -> None:
    path = IDENTITIES_DIR / "rose_leslie" / "img2.jpg"
    pixels = read_bgr(path)
    from_bytes, from_array, bad = scan_images(
        [("a", path.read_bytes()), ("a", pixels), ("b", pixels[:, :, 0])], shared_pack(), GATE
    )
    assert from_bytes == from_array
    assert from_bytes.passed
    assert bad.error == ErrorCode.INVALID_PAYLOAD and bad.face_count is None


def test_scan_images_applies_the_size_limits(tmp_path: Path) -> None:
    data = (IDENTITIES_DIR / "obama" / "obama.jpg").read_bytes()
    (row,) = scan_images(
        [("big.jpg", data)], shared_pack(), GATE, settings=Settings(max_image_bytes=1000)
    )
    assert row.error == ErrorCode.IMAGE_TOO_LARGE


def test_table_shows_every_row(mixed_dir: Path) -> None:
    rows = scan_directory(mixed_dir, shared_pack(), GATE, progress=False)
    table = render_table(rows)
    assert table.row_count == len(rows)
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    for row in rows:
        assert row.path in text
    assert "multiple_faces" in text and "image_truncated" in text


def test_cli_scan_writes_every_output(tmp_path: Path) -> None:
    csv_out, json_out = tmp_path / "scan.csv", tmp_path / "scan.json"
    result = CliRunner().invoke(
        app,
        [
            "scan",
            str(IDENTITIES_DIR),
            "--out",
            str(csv_out),
            "-o",
            str(json_out),
            "--no-progress",
            "--face-pack",
            str(FACE_PACK_DIR),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    n = len(identity_photos())
    assert f"{n} images, {n} passed, 0 refused" in result.output
    assert "facepack-test:det_500m=" in result.output
    assert "obama/obama.jpg" in result.output  # the table
    with csv_out.open(newline="", encoding="utf-8") as stream:
        assert len(list(csv.DictReader(stream))) == n
    assert len(json.loads(json_out.read_text(encoding="utf-8"))) == n


def test_cli_parquet_output(tmp_path: Path) -> None:
    out = tmp_path / "scan.parquet"
    result = CliRunner().invoke(
        app,
        [
            "scan",
            str(IDENTITIES_DIR / "obama"),
            "-o",
            str(out),
            "--no-progress",
            "--no-table",
            "--face-pack",
            str(FACE_PACK_DIR),
        ],
    )
    if PARQUET_PROBLEM is None:
        assert result.exit_code == 0, result.output
        import pyarrow.parquet as pq

        assert pq.read_table(out).num_rows == 3
    else:
        # Refused before scanning, with the reason, rather than failing after the work.
        assert result.exit_code == 1
        assert "cannot write Parquet" in result.output and not out.exists()


def test_cli_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    missing_pack = tmp_path / "no-such-pack"
    result = runner.invoke(
        app, ["scan", str(IDENTITIES_DIR), "--face-pack", str(missing_pack), "--no-progress"]
    )
    assert result.exit_code == 1
    assert "model_pack_invalid" in result.output and str(missing_pack) in result.output

    result = runner.invoke(app, ["scan", str(IDENTITIES_DIR), "--out", str(tmp_path / "x.xlsx")])
    assert result.exit_code == 2
    assert not (tmp_path / "x.xlsx").exists()

    result = runner.invoke(app, ["scan", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
