"""Reading public PAD dataset layouts: folders, CSV manifests, CelebA-Spoof label files.

Pure file parsing and split assignment (no torch): the label, attack type, subject and
split of every sample, checked on small fixtures written here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from training.liveness.data import (
    CELEBA_SPOOF_LABEL_INDEX,
    CELEBA_SPOOF_TYPE_INDEX,
    LIVE,
    SPOOF,
    assign_splits,
    load_samples,
    read_celeba_spoof,
    read_manifest,
    scan_folder,
)


def _touch(root: Path, rel: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rel.encode())  # distinct bytes: distinct content hashes
    return path


def test_flat_species_folders_beside_live(tmp_path: Path) -> None:
    # The layout of faces/pad: live/ beside one folder per attack species, no spoof/.
    for rel in ("live/a.jpg", "print/b.jpg", "replay/c.png", "replay/sub/d.jpg", ".hidden/e.jpg"):
        _touch(tmp_path, rel)
    found = {s.path.name: (s.label, s.attack_type) for s in scan_folder(tmp_path)}
    assert found == {
        "a.jpg": (LIVE, "live"),
        "b.jpg": (SPOOF, "print"),
        "c.png": (SPOOF, "replay"),
        "d.jpg": (SPOOF, "replay"),
    }


def test_real_and_attack_folder_aliases(tmp_path: Path) -> None:
    for rel in ("real/a.jpg", "attack/mask/b.jpg", "attack/c.jpg"):
        _touch(tmp_path, rel)
    found = {s.path.name: (s.label, s.attack_type) for s in scan_folder(tmp_path)}
    assert found == {"a.jpg": (LIVE, "live"), "b.jpg": (SPOOF, "mask"), "c.jpg": (SPOOF, "spoof")}


def test_folder_without_live_or_attacks_is_refused(tmp_path: Path) -> None:
    _touch(tmp_path, "print/a.jpg")
    with pytest.raises(ValueError, match="live/"):
        scan_folder(tmp_path)
    _touch(tmp_path / "only", "live/a.jpg")
    with pytest.raises(ValueError, match="species"):
        scan_folder(tmp_path / "only")


def test_manifest_columns_in_any_order_with_aliases_and_splits(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "split,subject,species,label,file\n"
        "train,s1,,live,live/a.jpg\n"
        "dev,s2,print,spoof,spoof/b.jpg\n"
        "eval,s3,replay,1,/abs/c.jpg\n"
        ",s4,,real,live/d.jpg\n"
    )
    rows = read_manifest(manifest)
    assert [(s.path, s.label, s.attack_type, s.subject_id, s.fixed_split) for s in rows] == [
        (tmp_path / "live/a.jpg", LIVE, "live", "s1", "train"),
        (tmp_path / "spoof/b.jpg", SPOOF, "print", "s2", "val"),
        (Path("/abs/c.jpg"), SPOOF, "replay", "s3", "test"),
        (tmp_path / "live/d.jpg", LIVE, "live", "s4", None),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,split\nlive/a.jpg,live,holdout\n")
    with pytest.raises(ValueError, match="row 2: unknown split 'holdout'"):
        read_manifest(bad)


def test_prescribed_splits_are_kept_and_train_gives_up_a_val_split(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    rows = ["path,label,attack_type,subject_id,split"]
    rows += [f"a{i}.jpg,{i % 2},print,s{i},train" for i in range(200)]
    rows += [f"t{i}.jpg,{i % 2},print,t{i},test" for i in range(20)]
    manifest.write_text("\n".join(rows) + "\n")
    samples = assign_splits(read_manifest(manifest), 0.2, 0.3)
    by_name = {s.path.name: s.split for s in samples}
    assert all(by_name[f"t{i}.jpg"] == "test" for i in range(20))
    from_train = [by_name[f"a{i}.jpg"] for i in range(200)]
    # No prescribed val split: prescribed train is divided into train and val (never test).
    assert set(from_train) == {"train", "val"}
    assert 20 <= from_train.count("val") <= 60
    # With a prescribed val split, prescribed train stays train.
    manifest.write_text("\n".join([*rows, "v.jpg,0,live,v,val"]) + "\n")
    kept = assign_splits(read_manifest(manifest), 0.2, 0.3)
    assert {s.split for s in kept if s.path.name.startswith("a")} == {"train"}


def test_unprescribed_subjects_never_straddle_splits(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    rows = ["path,label,subject_id"]
    rows += [f"{s}_{k}.jpg,{k % 2},subj{s}" for s in range(60) for k in range(4)]
    manifest.write_text("\n".join(rows) + "\n")
    splits: dict[str, set[str]] = defaultdict(set)
    for s in assign_splits(read_manifest(manifest), 0.2, 0.2):
        splits[str(s.subject_id)].add(s.split)
    assert all(len(v) == 1 for v in splits.values())
    assert set().union(*splits.values()) == {"train", "val", "test"}


def _vector(spoof_type: int) -> list[int]:
    vector = [0] * 44
    vector[CELEBA_SPOOF_TYPE_INDEX] = spoof_type
    vector[CELEBA_SPOOF_LABEL_INDEX] = int(spoof_type != 0)
    return vector


@pytest.fixture
def celeba_spoof(tmp_path: Path) -> Path:
    """A miniature CelebA-Spoof: Data/<split>/<subject>/<live|spoof>/ and metas/intra_test."""
    root = tmp_path / "CelebA_Spoof"
    labels = {
        "Data/train/10/live/000001.jpg": _vector(0),
        "Data/train/10/spoof/000002.png": _vector(1),  # photo
        "Data/train/11/spoof/000003.png": _vector(8),  # pad
        "Data/test/5000/live/100001.jpg": _vector(0),
        "Data/test/5000/spoof/100002.png": _vector(10),  # 3d mask
    }
    for rel in labels:
        _touch(root, rel)
    metas = root / "metas" / "intra_test"
    metas.mkdir(parents=True)
    train = {k: v for k, v in labels.items() if "/train/" in k}
    test = {k: v for k, v in labels.items() if "/test/" in k}
    (metas / "train_label.json").write_text(json.dumps(train))
    (metas / "test_label.json").write_text(json.dumps(test))
    (metas / "train_label.txt").write_text(
        "".join(f"{k} {v[CELEBA_SPOOF_LABEL_INDEX]}\n" for k, v in train.items())
    )
    return root


def test_celeba_spoof_json_labels(celeba_spoof: Path) -> None:
    metas = celeba_spoof / "metas" / "intra_test"
    rows = read_celeba_spoof(metas / "train_label.json") + read_celeba_spoof(
        metas / "test_label.json"
    )
    got = {
        s.path.relative_to(celeba_spoof).as_posix(): (
            s.label,
            s.attack_type,
            s.subject_id,
            s.fixed_split,
        )
        for s in rows
    }
    assert got == {
        "Data/train/10/live/000001.jpg": (LIVE, "live", "10", "train"),
        "Data/train/10/spoof/000002.png": (SPOOF, "photo", "10", "train"),
        "Data/train/11/spoof/000003.png": (SPOOF, "pad", "11", "train"),
        "Data/test/5000/live/100001.jpg": (LIVE, "live", "5000", "test"),
        "Data/test/5000/spoof/100002.png": (SPOOF, "3d_mask", "5000", "test"),
    }
    assert all(s.path.is_file() for s in rows)


def test_celeba_spoof_txt_labels_and_load_samples(celeba_spoof: Path) -> None:
    metas = celeba_spoof / "metas" / "intra_test"
    rows = read_celeba_spoof(metas / "train_label.txt")
    assert [(s.label, s.attack_type, s.subject_id) for s in rows] == [
        (LIVE, "live", "10"),
        (SPOOF, "spoof", "10"),
        (SPOOF, "spoof", "11"),
    ]
    samples = load_samples(
        None, None, 0.5, 0.2, [metas / "train_label.json", metas / "test_label.json"]
    )
    assert len(samples) == 5 and all(s.content_hash for s in samples)
    by_subject: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        by_subject[str(s.subject_id)].add(s.split)
    assert by_subject["5000"] == {"test"}
    assert by_subject["10"] <= {"train", "val"} and len(by_subject["10"]) == 1
    # An explicit root wins over the folder above metas/.
    moved = read_celeba_spoof(metas / "train_label.txt", root=Path("/elsewhere"))
    assert moved[0].path == Path("/elsewhere/Data/train/10/live/000001.jpg")


def test_celeba_spoof_inconsistent_vectors_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "metas" / "x_label.json"
    bad.parent.mkdir(parents=True)
    vector = _vector(3)
    vector[CELEBA_SPOOF_LABEL_INDEX] = 0  # an A4 print labelled live
    bad.write_text(json.dumps({"Data/train/1/live/a.jpg": vector}))
    with pytest.raises(ValueError, match="contradicts"):
        read_celeba_spoof(bad)
    bad.write_text(json.dumps({"Data/train/1/live/a.jpg": [0, 1]}))
    with pytest.raises(ValueError, match="44 labels"):
        read_celeba_spoof(bad)
    txt = tmp_path / "metas" / "y_label.txt"
    txt.write_text("Data/train/1/live/a.jpg\n")
    with pytest.raises(ValueError, match="line 1"):
        read_celeba_spoof(txt)
