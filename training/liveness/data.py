"""Finding labelled images (folder layout or CSV manifest) and splitting them deterministically.

Labels follow the exported model's class order: 0 = live (bona fide), 1 = spoof (attack).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

LIVE, SPOOF = 0, 1
CLASS_NAMES = ("live", "spoof")
LIVE_ATTACK_TYPE = "live"  # attack_type of bona fide samples
DEFAULT_ATTACK_TYPE = "spoof"  # attack_type of spoof files with no attack subfolder / column
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

# Bumping this salt reshuffles every split; it is versioned so that a change is deliberate.
_SPLIT_SALT = "faceauth-liveness-split/1"

_LIVE_WORDS = frozenset({"live", "real", "bona_fide", "bonafide", "genuine", "0"})
_SPOOF_WORDS = frozenset({"spoof", "attack", "fake", "1"})


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # LIVE or SPOOF
    attack_type: str  # "live" for bona fide, else the attack (PAI species) name
    subject_id: str | None = None
    content_hash: str | None = None  # sha256 of the file bytes; None when unreadable
    split: Split = "train"


def file_sha256(path: Path) -> str | None:
    """Hex sha256 of a file, or None when it cannot be read (it is reported later)."""
    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def _images_under(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def scan_folder(root: Path) -> list[Sample]:
    """``root/live/**`` are bona fide; ``root/spoof/<attack>/**`` keep ``<attack>`` as type.

    Files directly inside ``spoof/`` get the attack type ``"spoof"``.
    """
    live_dir, spoof_dir = root / "live", root / "spoof"
    if not live_dir.is_dir() or not spoof_dir.is_dir():
        raise ValueError(f"{root} must contain live/ and spoof/ folders")
    samples = [Sample(p, LIVE, LIVE_ATTACK_TYPE) for p in _images_under(live_dir)]
    for path in _images_under(spoof_dir):
        rel = path.relative_to(spoof_dir)
        attack = rel.parts[0] if len(rel.parts) > 1 else DEFAULT_ATTACK_TYPE
        samples.append(Sample(path, SPOOF, attack))
    return samples


def parse_label(text: str) -> int:
    word = text.strip().lower()
    if word in _LIVE_WORDS:
        return LIVE
    if word in _SPOOF_WORDS:
        return SPOOF
    raise ValueError(f"unknown label {text!r}: use live/real/0 or spoof/attack/1")


def read_manifest(manifest: Path) -> list[Sample]:
    """Read ``path,label[,attack_type][,subject_id]`` rows; a header row is optional.

    Relative paths are taken from the manifest's folder, so a dataset folder can be moved.
    """
    base = manifest.parent
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = [row for row in csv.reader(fh) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{manifest} is empty")
    columns = ["path", "label", "attack_type", "subject_id"]
    has_header = rows[0][0].strip().lower() == "path"
    if has_header:
        columns = [c.strip().lower() for c in rows[0]]
        rows = rows[1:]
        if "path" not in columns or "label" not in columns:
            raise ValueError(f"{manifest} header must name path and label columns")
    samples: list[Sample] = []
    for line_no, row in enumerate(rows, start=2 if has_header else 1):
        cells = dict(zip(columns, (c.strip() for c in row), strict=False))
        if not cells.get("path") or not cells.get("label"):
            raise ValueError(f"{manifest}: row {line_no} lacks a path or a label")
        label = parse_label(cells["label"])
        path = Path(cells["path"])
        attack = cells.get("attack_type") or DEFAULT_ATTACK_TYPE
        samples.append(
            Sample(
                path=path if path.is_absolute() else base / path,
                label=label,
                attack_type=LIVE_ATTACK_TYPE if label == LIVE else attack,
                subject_id=cells.get("subject_id") or None,
            )
        )
    return samples


def _unit_interval(key: str) -> float:
    digest = hashlib.sha256(f"{_SPLIT_SALT}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(key: str, val_fraction: float, test_fraction: float) -> Split:
    """Map a stable key to a split; the same key always lands in the same split."""
    u = _unit_interval(key)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def assign_splits(
    samples: Iterable[Sample], val_fraction: float, test_fraction: float
) -> list[Sample]:
    """Hash each sample's subject (so a subject never straddles splits), else its content.

    Content hashing (not the path) keeps a renamed or copied file in the split it was in,
    so an exact duplicate can never sit in both train and test.
    """
    out: list[Sample] = []
    for sample in samples:
        content_hash = sample.content_hash or file_sha256(sample.path)
        if sample.subject_id:
            key = f"subject:{sample.subject_id}"
        elif content_hash:
            key = f"file:{content_hash}"
        else:  # unreadable: it will be reported; any stable key will do
            key = f"path:{sample.path.as_posix()}"
        split = split_of(key, val_fraction, test_fraction)
        out.append(replace(sample, content_hash=content_hash, split=split))
    return out


def load_samples(
    data_dir: Path | None, manifest: Path | None, val_fraction: float, test_fraction: float
) -> list[Sample]:
    """Discover samples from the manifest (when given) or the folder, then split them."""
    if manifest is not None:
        found = read_manifest(manifest)
    elif data_dir is not None:
        found = scan_folder(data_dir)
    else:
        raise ValueError("give a data folder or a CSV manifest")
    if not found:
        raise ValueError("no images found")
    return assign_splits(found, val_fraction, test_fraction)
