"""Quality scan: run detection and the quality gate over many photos, without enrolling.

One row per image: its face count, every metric of the face (when there is exactly one),
whether it passed and why not. An image that cannot be read or decoded becomes a row
with an error code, never an exception, so one bad file does not end a scan of
thousands. ``scan_images`` is the core (the Celery task reuses it); ``scan_directory``
feeds it a folder; ``write_rows`` saves CSV, JSON or Parquet; ``render_table`` shows it.
"""

from __future__ import annotations

import csv
import json
import typing
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict
from rich.table import Table
from tqdm import tqdm

from shared.config import Settings, get_settings
from shared.errors import ErrorCode, FaceauthError
from shared.imaging import decode_image
from shared.schemas import QualityScanRequest
from workers.inference.face_pack import FacePack
from workers.inference.quality import ImageAssessment, QualityGate
from workers.job_runner import JobContext, Outcome

ImageInput = bytes | npt.NDArray[np.uint8]
OutputFormat = Literal["csv", "json", "parquet"]

# Files a directory scan picks up (compared lower-case); anything else is skipped, not an error.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})  # what the decoder accepts
_SUFFIX_FORMATS: dict[str, OutputFormat] = {
    ".csv": "csv",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
REASON_SEPARATOR = ";"


class QualityRow(BaseModel):
    """One scanned image. Metric columns are empty unless exactly one face was found."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    path: str
    face_count: int | None = None  # None: the image could not be read or decoded
    passed: bool = False
    reasons: str = ""  # reason codes joined by ";" (the error code for unreadable images)
    messages: str = ""  # the human messages, joined by "; "
    error: str | None = None  # an ErrorCode when the image could not be read or decoded
    det_score: float | None = None
    bbox_width: float | None = None
    bbox_height: float | None = None
    face_area_ratio: float | None = None
    blur: float | None = None
    brightness: float | None = None
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    pose_source: str | None = None
    image_width: int | None = None
    image_height: int | None = None
    aligned_crop_coverage: float | None = None
    eye_aspect_ratio: float | None = None
    right_eye_skin: float | None = None
    left_eye_skin: float | None = None
    nose_skin: float | None = None
    mouth_skin: float | None = None

    @property
    def reason_codes(self) -> list[str]:
        return self.reasons.split(REASON_SEPARATOR) if self.reasons else []


COLUMNS: tuple[str, ...] = tuple(QualityRow.model_fields)


def assess_one(
    name: str,
    data: ImageInput,
    pack: FacePack,
    gate: QualityGate,
    *,
    settings: Settings | None = None,
) -> QualityRow:
    """Decode (when ``data`` is bytes), detect, gate: one row, whatever the image holds."""
    if isinstance(data, bytes | bytearray):
        limits = settings or get_settings()
        try:
            pixels = decode_image(
                bytes(data), max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels
            ).pixels
        except FaceauthError as exc:
            return error_row(name, exc.code, exc.message)
    else:
        pixels = data
        if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 3):
            return error_row(name, ErrorCode.INVALID_PAYLOAD, "expected an HxWx3 uint8 BGR array")
    faces = pack.detect(pixels)
    return row_from_assessment(name, gate.assess(pixels, faces))


def row_from_assessment(name: str, assessment: ImageAssessment) -> QualityRow:
    metrics = assessment.metrics.model_dump() if assessment.metrics is not None else {}
    return QualityRow(
        path=name,
        face_count=assessment.face_count,
        passed=assessment.passed,
        reasons=REASON_SEPARATOR.join(str(r.code) for r in assessment.reasons),
        messages="; ".join(r.message for r in assessment.reasons),
        **metrics,
    )


def error_row(name: str, code: ErrorCode, message: str) -> QualityRow:
    return QualityRow(path=name, error=str(code), reasons=str(code), messages=message)


def scan_images(
    items: Iterable[tuple[str, ImageInput]],
    pack: FacePack,
    gate: QualityGate,
    *,
    progress: bool = False,
    total: int | None = None,
    settings: Settings | None = None,
) -> list[QualityRow]:
    """One row per ``(name, encoded bytes or decoded BGR array)``, in input order."""
    bar = tqdm(items, total=total, disable=not progress, desc="quality scan", unit="img")
    return [assess_one(name, data, pack, gate, settings=settings) for name, data in bar]


def image_files(directory: Path, *, recursive: bool = True) -> list[Path]:
    """Image files under ``directory`` (by suffix), sorted for a stable row order."""
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    candidates = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def scan_directory(
    directory: Path,
    pack: FacePack,
    gate: QualityGate,
    progress: bool = True,
    *,
    recursive: bool = True,
    settings: Settings | None = None,
) -> list[QualityRow]:
    """Scan every image file under ``directory``; rows name files relative to it."""
    directory = Path(directory)
    files = image_files(directory, recursive=recursive)
    rows: list[QualityRow] = []
    for path in tqdm(files, disable=not progress, desc="quality scan", unit="img"):
        name = path.relative_to(directory).as_posix()
        try:
            data = path.read_bytes()
        except OSError as exc:
            rows.append(error_row(name, ErrorCode.IMAGE_NOT_FOUND, f"cannot read file: {exc}"))
            continue
        rows.append(assess_one(name, data, pack, gate, settings=settings))
    return rows


# --- output ---------------------------------------------------------------------------------


def output_format(path: Path, fmt: str | None = None) -> OutputFormat:
    """``fmt`` when given, else the format named by ``path``'s suffix."""
    if fmt is not None:
        if fmt not in ("csv", "json", "parquet"):
            raise ValueError(f"unknown output format {fmt!r} (use csv, json or parquet)")
        return typing.cast(OutputFormat, fmt)
    try:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"cannot tell the output format of {path} from its suffix; use .csv, .json, "
            ".parquet or pass a format"
        ) from None


def write_rows(rows: Iterable[QualityRow], out: Path, fmt: str | None = None) -> Path:
    """Write ``rows`` to ``out`` as CSV, JSON or Parquet (by ``fmt`` or suffix); return ``out``."""
    kind = output_format(out, fmt)
    records = [row.model_dump() for row in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "csv":
        write_csv(records, out)
    elif kind == "json":
        write_json(records, out)
    else:
        write_parquet(records, out)
    return out


def write_csv(records: list[dict[str, Any]], out: Path) -> None:
    with out.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(records)  # None becomes an empty cell


def write_json(records: list[dict[str, Any]], out: Path) -> None:
    with out.open("w", encoding="utf-8") as stream:
        json.dump(records, stream, indent=2, allow_nan=False)
        stream.write("\n")


def parquet_unavailable() -> str | None:
    """Why Parquet cannot be written in this environment, or None when it can."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:  # e.g. a pyarrow built for NumPy 2 beside NumPy 1.x
        return f"pyarrow cannot be imported: {exc}"
    return None


def write_parquet(records: list[dict[str, Any]], out: Path) -> None:
    problem = parquet_unavailable()
    if problem is not None:
        raise RuntimeError(f"cannot write Parquet to {out}: {problem}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    # An explicit schema: a column that is empty in every row still gets its real type.
    table = pa.Table.from_pylist(records, schema=arrow_schema())
    pq.write_table(table, out)


def arrow_schema() -> Any:
    """The pyarrow schema of ``QualityRow`` (nullable where the field is optional)."""
    import pyarrow as pa

    arrow_types: dict[object, Any] = {
        str: pa.string(),
        int: pa.int64(),
        float: pa.float64(),
        bool: pa.bool_(),
    }
    fields = []
    for name, info in QualityRow.model_fields.items():
        # ``X | None`` -> (X, nullable); a plain ``X`` -> (X, not nullable).
        args = typing.get_args(info.annotation)
        nullable = type(None) in args
        base = next(a for a in args if a is not type(None)) if args else info.annotation
        fields.append(pa.field(name, arrow_types[base], nullable=nullable))
    return pa.schema(fields)


# --- display --------------------------------------------------------------------------------


def reason_counts(rows: Iterable[QualityRow]) -> Counter[str]:
    """How many images failed for each reason (an image may count under several)."""
    return Counter(code for row in rows for code in row.reason_codes)


def render_table(rows: Iterable[QualityRow], *, title: str | None = "Quality scan") -> Table:
    """A rich table of the rows: the main metrics, the verdict and its reasons."""
    table = Table(title=title, show_lines=False, header_style="bold")
    table.add_column("image", overflow="fold")
    for header in ("faces", "det", "width", "blur", "bright", "yaw", "pitch"):
        table.add_column(header, justify="right")
    table.add_column("ok", justify="center")
    table.add_column("reasons", overflow="fold")
    for row in rows:
        verdict = "[green]yes[/green]" if row.passed else "[red]no[/red]"
        table.add_row(
            row.path,
            "-" if row.face_count is None else str(row.face_count),
            _fmt(row.det_score, ".2f"),
            _fmt(row.bbox_width, ".0f"),
            _fmt(row.blur, ".1f"),
            _fmt(row.brightness, ".0f"),
            _fmt(row.yaw, "+.0f"),
            _fmt(row.pitch, "+.0f"),
            verdict,
            row.reasons.replace(REASON_SEPARATOR, ", "),
        )
    return table


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


# --- the faceauth.quality_scan job ---------------------------------------------------------


def quality_scan_job(request: QualityScanRequest, ctx: JobContext) -> Outcome:
    rt = ctx.runtime
    pack = rt.face_pack()
    gate = QualityGate(rt.settings)
    rows: list[QualityRow] = []
    for key in request.image_keys:
        try:
            data = rt.store.get(key, max_bytes=rt.settings.max_image_bytes)
        except FaceauthError as exc:
            if exc.transient:
                raise
            rows.append(
                QualityRow(
                    path=key, reasons=str(exc.code), messages=exc.message, error=str(exc.code)
                )
            )
            continue
        rows.append(assess_one(key, data, pack, gate, settings=rt.settings))
    return Outcome(
        result={
            "model_version": pack.model_version,
            "n_images": len(rows),
            "n_passed": sum(r.passed for r in rows),
            "rows": [r.model_dump(mode="json") for r in rows],
        }
    )
