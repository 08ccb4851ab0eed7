"""Reports a person reads after a run: unusable images, data balance (EDA) and score plots.

All plots use matplotlib's Agg backend: training runs headless (CI, GPU boxes).
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.liveness.data import CLASS_NAMES, SPLITS, Sample
from training.liveness.evaluate import roc_curve
from training.liveness.preprocess import PreprocessResult


def write_json(path: Path, payload: Any) -> Path:
    """Write JSON atomically, so a reader never sees half a file (the epoch log is rewritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_preprocess_report(result: PreprocessResult, json_path: Path, csv_path: Path) -> Path:
    """List every unusable image with its reason (JSON with counts, and a CSV for sheets)."""
    rows = [
        {
            "path": str(u.sample.path),
            "label": CLASS_NAMES[u.sample.label],
            "attack_type": u.sample.attack_type,
            "split": u.sample.split,
            "reason": u.reason,
            "detail": u.detail,
        }
        for u in result.unusable
    ]
    payload = {
        "n_images": len(result.usable) + len(result.unusable),
        "n_usable": len(result.usable),
        "n_unusable": len(result.unusable),
        "unusable_by_reason": dict(Counter(u.reason for u in result.unusable)),
        "cache_hits": result.cache_hits,
        "cache_misses": result.cache_misses,
        "unusable": rows,
    }
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        fields = ["path", "label", "attack_type", "split", "reason", "detail"]
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return write_json(json_path, payload)


def balance_table(samples: Sequence[Sample]) -> dict[str, dict[str, dict[str, int]]]:
    """{split: {"class": {live: n, spoof: n}, "attack_type": {type: n}}}."""
    table: dict[str, dict[str, dict[str, int]]] = {}
    for split in SPLITS:
        in_split = [s for s in samples if s.split == split]
        table[split] = {
            "class": {
                name: sum(s.label == i for s in in_split) for i, name in enumerate(CLASS_NAMES)
            },
            "attack_type": dict(sorted(Counter(s.attack_type for s in in_split).items())),
        }
    return table


def write_eda_report(
    usable: Sequence[Sample], unusable: Sequence[Sample], json_path: Path, png_path: Path
) -> Path:
    """Class and attack-type balance per split (usable images), as JSON and a bar chart."""
    table = balance_table(usable)
    subjects = {s.subject_id for s in usable if s.subject_id}
    payload = {
        "split_by": "subject_id" if subjects else "file content hash",
        "n_subjects": len(subjects),
        "usable": table,
        "unusable": {split: sum(s.split == split for s in unusable) for split in SPLITS},
    }
    _plot_balance(table, png_path)
    return write_json(json_path, payload)


def _plot_balance(table: dict[str, dict[str, dict[str, int]]], png_path: Path) -> None:
    plt = _pyplot()
    types = sorted({t for split in table.values() for t in split["attack_type"]})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 2]})
    width = 0.8 / len(SPLITS)
    for axis, key, cats in ((axes[0], "class", list(CLASS_NAMES)), (axes[1], "attack_type", types)):
        x = np.arange(len(cats))
        for i, split in enumerate(SPLITS):
            counts = [table[split][key].get(c, 0) for c in cats]
            bars = axis.bar(x + (i - 1) * width, counts, width, label=split)
            axis.bar_label(bars, fontsize=7)
        axis.set_xticks(x, cats, rotation=20)
        axis.set_ylabel("images")
        axis.set_title("class per split" if key == "class" else "attack type per split")
    axes[0].legend()
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def plot_roc(
    labels: Sequence[int], scores: Sequence[float], auc: float | None, png_path: Path
) -> Path:
    plt = _pyplot()
    fpr, tpr, _ = roc_curve(labels, scores)
    fig, axis = plt.subplots(figsize=(5, 5))
    label = f"AUC = {auc:.3f}" if auc is not None else "AUC undefined (one class)"
    axis.plot(fpr, tpr, marker=".", label=label)
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    axis.set_xlabel("BPCER (live called spoof)")
    axis.set_ylabel("1 - APCER (spoof caught)")
    axis.set_title("ROC, spoof = positive")
    axis.legend(loc="lower right")
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def plot_score_histogram(
    scores: Sequence[float], attack_types: Sequence[str], threshold: float, png_path: Path
) -> Path:
    """Spoof-score distribution per attack type (live included), with the threshold marked."""
    plt = _pyplot()
    s = np.asarray(scores, dtype=np.float64)
    types = np.asarray(attack_types, dtype=object)
    fig, axis = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0.0, 1.0, 21)
    for name in sorted(set(types.tolist())):
        chosen = s[types == name]
        axis.hist(chosen, bins=bins, alpha=0.5, label=f"{name} (n={len(chosen)})")
    axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    axis.set_xlabel("spoof score (1 = spoof)")
    axis.set_ylabel("images")
    axis.legend()
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
