"""Labelled PAD sets from a folder layout or a CSV manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.pad.samples import PadSample, PadSetError, samples_from_folder, samples_from_manifest


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def _labels(samples: list[PadSample]) -> dict[str, str | None]:
    return {s.path.name: s.species for s in samples}


def test_spoof_folder_and_top_level_species_are_both_species(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "live/a.jpg", "live/sub/b.PNG", "live/notes.txt", "live/.hidden/c.jpg",
        "spoof/print/p.jpg", "spoof/loose.jpg", "replay/r.webp",
    )  # fmt: skip
    assert _labels(samples_from_folder(tmp_path)) == {
        "a.jpg": None,
        "b.PNG": None,
        "p.jpg": "print",
        "loose.jpg": "spoof",
        "r.webp": "replay",
    }


def test_shared_layout_every_folder_but_live_is_a_species(tmp_path: Path) -> None:
    _touch(tmp_path, "live/a.jpg", "print/p.jpg", "replay/r.jpg")
    samples = samples_from_folder(tmp_path)
    assert sorted(s.group for s in samples) == ["bona_fide", "print", "replay"]


def test_a_species_named_twice_or_oddly_is_refused(tmp_path: Path) -> None:
    _touch(tmp_path, "live/a.jpg", "print/p.jpg", "spoof/print/q.jpg")
    with pytest.raises(PadSetError, match="twice"):
        samples_from_folder(tmp_path)
    other = tmp_path / "other"
    _touch(other, "live/a.jpg", "bad name!/p.jpg")
    with pytest.raises(PadSetError, match="species name"):
        samples_from_folder(other)
    with pytest.raises(PadSetError, match="no images"):
        samples_from_folder(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    (folder / "live").mkdir(parents=True)
    return folder


def test_manifest_rows(tmp_path: Path) -> None:
    manifest = tmp_path / "set.csv"
    manifest.write_text(
        "path,label,species,subject\n"
        "img/a.jpg,live,,s1\n"
        "/abs/b.jpg,bona_fide,print,s2\n"  # a live row's species is ignored
        "img/c.jpg,spoof,mask,s3\n"
        "img/d.jpg,attack,,\n"
    )
    samples = samples_from_manifest(manifest)
    assert [(str(s.path), s.species, s.subject) for s in samples] == [
        (str(tmp_path / "img" / "a.jpg"), None, "s1"),
        ("/abs/b.jpg", None, "s2"),
        (str(tmp_path / "img" / "c.jpg"), "mask", "s3"),
        (str(tmp_path / "img" / "d.jpg"), "unspecified", None),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\na.jpg,live\n", "missing column"),
        ("path,label\na.jpg,maybe\n", "neither live nor spoof"),
        ("path,label\n,live\n", "empty path"),
        ("path,label\n", "no images"),
    ],
)
def test_bad_manifests(tmp_path: Path, text: str, message: str) -> None:
    manifest = tmp_path / "set.csv"
    manifest.write_text(text)
    with pytest.raises(PadSetError, match=message):
        samples_from_manifest(manifest)
