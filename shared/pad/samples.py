"""Labelled presentation sets for a PAD evaluation: a folder layout or a CSV manifest.

Folder layout (``faceauth liveness evaluate DIR``): ``live/`` holds the bona fide
presentations; every other top-level folder is one attack (PAI) species named after it,
and ``spoof/`` may group species one level down. So both

    DIR/live/...  DIR/spoof/print/...  DIR/spoof/replay/...
    DIR/live/...  DIR/print/...        DIR/replay/...

give the species ``print`` and ``replay``; image files directly inside ``spoof/`` form
the species ``spoof``. Images are found recursively with the suffixes in
``IMAGE_SUFFIXES``; hidden files and folders are skipped.

Manifest: a CSV with a header and the columns ``path,label,species[,subject]``; ``label``
is ``live`` / ``bona_fide`` or ``spoof`` / ``attack``; ``species`` names the attack type
(empty for live rows; an attack row without one gets ``unspecified``); relative paths are
relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
BONA_FIDE_FOLDER = "live"
SPOOF_FOLDER = "spoof"
UNSPECIFIED_SPECIES = "unspecified"
_BONA_FIDE_LABELS = frozenset({"live", "bona_fide", "bonafide", "real", "0"})
_ATTACK_LABELS = frozenset({"spoof", "attack", "fake", "1"})
# Species become JSON keys, table rows and plot legends: keep them plain.
_SPECIES_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


class PadSetError(ValueError):
    """The folder or manifest does not describe a usable labelled set."""


@dataclass(frozen=True)
class PadSample:
    path: Path
    species: str | None  # None: bona fide; else the attack species
    subject: str | None = None

    @property
    def is_attack(self) -> bool:
        return self.species is not None

    @property
    def group(self) -> str:
        """``bona_fide`` or the species: the stratum a sample is counted in."""
        return self.species if self.species is not None else "bona_fide"


def _images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _species_name(name: str, where: Path) -> str:
    if not _SPECIES_RE.fullmatch(name):
        raise PadSetError(f"{where}: species name {name!r} must match {_SPECIES_RE.pattern}")
    return name


def samples_from_folder(root: Path) -> list[PadSample]:
    """Every image under ``root`` labelled by the folder layout (module docstring)."""
    if not root.is_dir():
        raise PadSetError(f"{root} is not a folder")
    samples = [PadSample(p, None) for p in _images(root / BONA_FIDE_FOLDER)]
    species_dirs: list[tuple[str, Path]] = []
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith(".") or child.name == BONA_FIDE_FOLDER:
            continue
        if child.name == SPOOF_FOLDER:
            loose = [
                p for p in child.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            ]
            samples.extend(PadSample(p, SPOOF_FOLDER) for p in sorted(loose))
            species_dirs.extend(
                (d.name, d)
                for d in sorted(child.iterdir())
                if d.is_dir() and not d.name.startswith(".")
            )
        else:
            species_dirs.append((child.name, child))
    seen: set[str] = set()
    for name, folder in species_dirs:
        if name in seen:
            raise PadSetError(f"species {name!r} appears twice under {root}")
        seen.add(name)
        species = _species_name(name, folder)
        samples.extend(PadSample(p, species) for p in _images(folder))
    _check_not_empty(samples, str(root))
    return samples


def samples_from_manifest(manifest: Path) -> list[PadSample]:
    """Rows of a ``path,label,species[,subject]`` CSV (module docstring)."""
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise PadSetError(f"cannot read {manifest}: {exc}") from exc
    reader = csv.DictReader(text.splitlines())
    missing = {"path", "label"} - set(reader.fieldnames or ())
    if missing:
        raise PadSetError(f"{manifest}: missing column(s) {sorted(missing)}")
    base = manifest.parent
    samples: list[PadSample] = []
    for line, row in enumerate(reader, start=2):
        where = f"{manifest}:{line}"
        raw_path = (row.get("path") or "").strip()
        label = (row.get("label") or "").strip().lower()
        species = (row.get("species") or "").strip()
        subject = (row.get("subject") or "").strip() or None
        if not raw_path:
            raise PadSetError(f"{where}: empty path")
        path = Path(raw_path)
        path = path if path.is_absolute() else base / path
        if label in _BONA_FIDE_LABELS:
            samples.append(PadSample(path, None, subject))
        elif label in _ATTACK_LABELS:
            name = _species_name(species or UNSPECIFIED_SPECIES, Path(where))
            samples.append(PadSample(path, name, subject))
        else:
            raise PadSetError(f"{where}: label {label!r} is neither live nor spoof")
    _check_not_empty(samples, str(manifest))
    return samples


def _check_not_empty(samples: list[PadSample], where: str) -> None:
    if not samples:
        raise PadSetError(
            f"no images found in {where} (expected {BONA_FIDE_FOLDER}/ and attack folders)"
        )
