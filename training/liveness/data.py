"""Finding labelled images and splitting them deterministically.

Layouts read (the common ones of public PAD datasets):

* folders: ``live/`` (or ``real/``, ``bona_fide/``, ``genuine/``) beside ``spoof/<species>/``
  (or ``attack/``, ``fake/``), or beside one folder per attack species (``print/``,
  ``replay/``: the layout of ``faces/pad``);
* a CSV manifest ``path,label[,attack_type][,subject_id][,split]`` (any column order when a
  header names them);
* CelebA-Spoof's label files (``metas/*/{train,test}_label.json`` with its 44-value
  attribute vectors, or the ``<path> <label>`` ``*_label.txt`` lists).

Labels follow the exported model's class order: 0 = live (bona fide), 1 = spoof (attack).
The attack type (PAI species) of every sample is kept so results can be reported per species.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Sequence
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
# Folder names: bona fide folders, and parents of per-species attack folders.
_LIVE_FOLDERS = ("live", "real", "bona_fide", "bonafide", "genuine")
_SPOOF_FOLDERS = ("spoof", "attack", "fake")
# Manifest header aliases used by public datasets' own CSVs.
_COLUMN_ALIASES = {
    "file": "path",
    "image": "path",
    "filename": "path",
    "attack": "attack_type",
    "species": "attack_type",
    "pai": "attack_type",
    "spoof_type": "attack_type",
    "subject": "subject_id",
    "client_id": "subject_id",
    "identity": "subject_id",
    "partition": "split",
    "subset": "split",
}
_SPLIT_WORDS: dict[str, Split] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "devel": "val",
    "test": "test",
    "eval": "test",
}

# CelebA-Spoof: index 40 of a label vector is the spoof type, 43 live (0) / spoof (1).
CELEBA_SPOOF_TYPE_INDEX = 40
CELEBA_SPOOF_LABEL_INDEX = 43
CELEBA_SPOOF_TYPES = (
    "live",
    "photo",
    "poster",
    "a4",
    "face_mask",
    "upper_body_mask",
    "region_mask",
    "pc",
    "pad",
    "phone",
    "3d_mask",
)


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # LIVE or SPOOF
    attack_type: str  # "live" for bona fide, else the attack (PAI species) name
    subject_id: str | None = None
    content_hash: str | None = None  # sha256 of the file bytes; None when unreadable
    split: Split = "train"
    # A split the dataset itself prescribes (manifest column, CelebA-Spoof train/test);
    # None: derived by hashing the subject or the content.
    fixed_split: Split | None = None


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


def _first_dir(root: Path, names: Sequence[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def scan_folder(root: Path) -> list[Sample]:
    """Bona fide images under ``live/``; attack images with their species as attack type.

    Species are ``spoof/<species>/**`` (files directly in ``spoof/`` get ``"spoof"``) or,
    without a ``spoof/`` folder, every other top-level folder (``print/``, ``replay/``...).
    """
    live_dir = _first_dir(root, _LIVE_FOLDERS)
    if live_dir is None:
        raise ValueError(f"{root} must contain a live/ folder (or real/, bona_fide/, genuine/)")
    samples = [Sample(p, LIVE, LIVE_ATTACK_TYPE) for p in _images_under(live_dir)]
    spoof_dir = _first_dir(root, _SPOOF_FOLDERS)
    if spoof_dir is not None:
        for path in _images_under(spoof_dir):
            rel = path.relative_to(spoof_dir)
            attack = rel.parts[0] if len(rel.parts) > 1 else DEFAULT_ATTACK_TYPE
            samples.append(Sample(path, SPOOF, attack))
        return samples
    species = sorted(
        d
        for d in root.iterdir()
        if d.is_dir()
        and d != live_dir
        and not d.name.startswith(".")
        and d.name not in _LIVE_FOLDERS
    )
    if not species:
        raise ValueError(f"{root} must contain spoof/ or one folder per attack species")
    for folder in species:
        samples.extend(Sample(p, SPOOF, folder.name) for p in _images_under(folder))
    return samples


def parse_label(text: str) -> int:
    word = text.strip().lower()
    if word in _LIVE_WORDS:
        return LIVE
    if word in _SPOOF_WORDS:
        return SPOOF
    raise ValueError(f"unknown label {text!r}: use live/real/0 or spoof/attack/1")


def parse_split(text: str) -> Split | None:
    word = text.strip().lower()
    if not word:
        return None
    if word not in _SPLIT_WORDS:
        raise ValueError(f"unknown split {text!r}: use train, val (dev) or test")
    return _SPLIT_WORDS[word]


def read_manifest(manifest: Path) -> list[Sample]:
    """Read ``path,label[,attack_type][,subject_id][,split]`` rows; a header row is optional.

    Without a header the columns are in that order. With one (a row naming ``path`` or
    ``label``) any order and the aliases of ``_COLUMN_ALIASES`` are accepted. Relative paths
    are taken from the manifest's folder, so a dataset folder can be moved.
    """
    base = manifest.parent
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = [row for row in csv.reader(fh) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{manifest} is empty")
    columns = ["path", "label", "attack_type", "subject_id", "split"]
    names = [c.strip().lower() for c in rows[0]]
    # A data row never holds the literal column names, so their presence marks a header.
    has_header = bool({"path", "label"} & {_COLUMN_ALIASES.get(n, n) for n in names})
    if has_header:
        columns = [_COLUMN_ALIASES.get(c.strip().lower(), c.strip().lower()) for c in rows[0]]
        rows = rows[1:]
        if "path" not in columns or "label" not in columns:
            raise ValueError(f"{manifest} header must name path and label columns")
    samples: list[Sample] = []
    for line_no, row in enumerate(rows, start=2 if has_header else 1):
        cells = dict(zip(columns, (c.strip() for c in row), strict=False))
        if not cells.get("path") or not cells.get("label"):
            raise ValueError(f"{manifest}: row {line_no} lacks a path or a label")
        try:
            label = parse_label(cells["label"])
            fixed_split = parse_split(cells.get("split", ""))
        except ValueError as exc:
            raise ValueError(f"{manifest}: row {line_no}: {exc}") from exc
        path = Path(cells["path"])
        attack = cells.get("attack_type") or DEFAULT_ATTACK_TYPE
        samples.append(
            Sample(
                path=path if path.is_absolute() else base / path,
                label=label,
                attack_type=LIVE_ATTACK_TYPE if label == LIVE else attack,
                subject_id=cells.get("subject_id") or None,
                fixed_split=fixed_split,
            )
        )
    return samples


def celeba_spoof_root(label_file: Path) -> Path:
    """The dataset root of a label file: the folder holding ``metas/`` (paths start at Data/)."""
    for parent in label_file.resolve().parents:
        if parent.name == "metas":
            return parent.parent
    return label_file.parent


def _celeba_path_facts(rel: str) -> tuple[str | None, Split | None]:
    """(subject id, split) from ``Data/<train|test>/<subject>/<live|spoof>/<file>``."""
    parts = Path(rel).parts
    if len(parts) >= 4 and parts[0] == "Data":
        return parts[2], _SPLIT_WORDS.get(parts[1].lower())
    return None, None


def read_celeba_spoof(label_file: Path, root: Path | None = None) -> list[Sample]:
    """Samples of a CelebA-Spoof label file (``*.json`` attribute vectors or ``*.txt`` list).

    The JSON maps ``Data/<split>/<subject>/<live|spoof>/<file>`` to 44 integers: [40] is
    the spoof type (``CELEBA_SPOOF_TYPES``: photo, poster, a4, ..., 3d_mask) and [43] is
    0 live / 1 spoof. The TXT lists ``<path> <0|1>`` (no spoof type: attack type
    ``"spoof"``). The subject id is the folder after ``Data/<split>/`` (so splits are
    subject-disjoint) and ``Data/test`` is kept as the test split. ``root`` defaults to
    the folder that holds ``metas/``.
    """
    base = root if root is not None else celeba_spoof_root(label_file)
    entries: list[tuple[str, int, str]] = []  # rel path, label, attack type
    if label_file.suffix.lower() == ".json":
        data = json.loads(label_file.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{label_file}: expected a JSON object of path -> label vector")
        for rel, vector in data.items():
            if not isinstance(vector, list) or len(vector) <= CELEBA_SPOOF_LABEL_INDEX:
                raise ValueError(f"{label_file}: {rel}: expected a list of 44 labels")
            label = SPOOF if int(vector[CELEBA_SPOOF_LABEL_INDEX]) else LIVE
            kind = int(vector[CELEBA_SPOOF_TYPE_INDEX])
            if not 0 <= kind < len(CELEBA_SPOOF_TYPES):
                raise ValueError(f"{label_file}: {rel}: unknown spoof type {kind}")
            if (kind == 0) != (label == LIVE):
                raise ValueError(f"{label_file}: {rel}: spoof type {kind} contradicts label")
            entries.append((rel, label, CELEBA_SPOOF_TYPES[kind]))
    else:
        for line_no, line in enumerate(label_file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2:
                raise ValueError(f"{label_file}: line {line_no}: expected '<path> <0|1>'")
            try:
                label = parse_label(fields[1])
            except ValueError as exc:
                raise ValueError(f"{label_file}: line {line_no}: {exc}") from exc
            entries.append((fields[0], label, DEFAULT_ATTACK_TYPE))
    samples = []
    for rel, label, attack in entries:
        subject, split = _celeba_path_facts(rel)
        samples.append(
            Sample(
                path=base / rel,
                label=label,
                attack_type=LIVE_ATTACK_TYPE if label == LIVE else attack,
                subject_id=subject,
                fixed_split=split,
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
    so an exact duplicate can never sit in both train and test. A split the dataset
    prescribes is kept, except that prescribed ``train`` samples are divided into train and
    val (by the same hashing, ``val_fraction``) when the dataset prescribes no val split:
    early stopping needs one, and it must not be the test split.
    """
    items = list(samples)
    has_val = any(s.fixed_split == "val" for s in items)
    out: list[Sample] = []
    for sample in items:
        content_hash = sample.content_hash or file_sha256(sample.path)
        if sample.subject_id:
            key = f"subject:{sample.subject_id}"
        elif content_hash:
            key = f"file:{content_hash}"
        else:  # unreadable: it will be reported; any stable key will do
            key = f"path:{sample.path.as_posix()}"
        if sample.fixed_split is None:
            split = split_of(key, val_fraction, test_fraction)
        elif sample.fixed_split == "train" and not has_val:
            split = split_of(key, val_fraction, 0.0)
        else:
            split = sample.fixed_split
        out.append(replace(sample, content_hash=content_hash, split=split))
    return out


def load_samples(
    data_dir: Path | None,
    manifest: Path | None,
    val_fraction: float,
    test_fraction: float,
    celeba_spoof: Sequence[Path] = (),
) -> list[Sample]:
    """Discover samples (CelebA-Spoof label files, else the manifest, else the folder), split.

    With CelebA-Spoof label files, ``data_dir`` (when given) is the dataset root their
    paths start from.
    """
    if celeba_spoof:
        found = [s for f in celeba_spoof for s in read_celeba_spoof(f, data_dir)]
    elif manifest is not None:
        found = read_manifest(manifest)
    elif data_dir is not None:
        found = scan_folder(data_dir)
    else:
        raise ValueError("give a data folder, a CSV manifest or CelebA-Spoof label files")
    if not found:
        raise ValueError("no images found")
    return assign_splits(found, val_fraction, test_fraction)
