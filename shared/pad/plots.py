"""PNG plots of a PAD evaluation: DET curves per attack species and score histograms.

Same conventions as ``shared.calibration.plots``: an explicit Agg canvas, never pyplot.
The DET plot has normal-deviate (probit) axes like standard DET plots: APCER on x,
BPCER on y, one curve per species and one for all attacks pooled.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from shared.pad.metrics import error_curve

DET_FILE = "det_curve.png"
HISTOGRAM_FILE = "score_histograms.png"
_DPI = 120
_BINS = 20
_DET_TICKS = (1e-4, 1e-3, 1e-2, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99)
_NORMAL = NormalDist()
FloatArray = npt.NDArray[np.float64]


def plot_det(
    bona_fide: FloatArray,
    attacks: Mapping[str, FloatArray],
    path: Path,
    *,
    threshold: float,
    title: str,
) -> None:
    """APCER against BPCER on probit axes; the operating threshold marked on each curve."""
    fig = _figure()
    ax = fig.add_subplot()
    curves = {name: a for name, a in attacks.items() if a.size}
    pooled = [a for a in curves.values()]
    if len(curves) > 1:
        curves = {**curves, "all attacks": np.concatenate(pooled)}
    largest = max([bona_fide.size, *(a.size for a in curves.values())], default=1)
    # probit(0) is -inf: rates of 0 and 1 are drawn at the edge, half a sample beyond the
    # smallest rate the largest class can measure (and at least 1 % to 99 % for tiny sets).
    lo = min(0.5 / max(largest, 1), 0.01)
    hi = 1.0 - lo
    if bona_fide.size:
        for name, scores in curves.items():
            _, apcers, bpcers = error_curve(bona_fide, scores)
            style = "--" if name == "all attacks" else "-"
            line = ax.plot(
                _probit(np.clip(apcers, lo, hi)),
                _probit(np.clip(bpcers, lo, hi)),
                linestyle=style,
                drawstyle="steps-post",
                label=f"{name} (n={scores.size})",
            )[0]
            at = np.array([np.mean(scores <= threshold), np.mean(bona_fide > threshold)])
            xy = _probit(np.clip(at, lo, hi))
            ax.plot([xy[0]], [xy[1]], marker="o", color=line.get_color(), linestyle="none")
    ticks = [t for t in _DET_TICKS if lo <= t <= hi]
    positions = _probit(np.array(ticks))
    labels = [f"{100 * t:g}%" for t in ticks]
    ax.set_xticks(positions, labels, fontsize="small")
    ax.set_yticks(positions, labels, fontsize="small")
    limits = _probit(np.array([lo, hi]))
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_xlabel("APCER (attacks accepted as bona fide)")
    ax.set_ylabel(f"BPCER (bona fide refused, n={bona_fide.size})")
    ax.set_title(f"{title}\nDET; dots: threshold {threshold:.3f}", fontsize="medium")
    ax.grid(True, linewidth=0.4, alpha=0.6)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="upper right")
    fig.savefig(path, dpi=_DPI)


def plot_histograms(
    bona_fide: FloatArray,
    attacks: Mapping[str, FloatArray],
    path: Path,
    *,
    threshold: float,
    title: str,
) -> None:
    """Spoof-score counts of bona fide and of each species, one panel each, shared x."""
    groups = {"bona fide": bona_fide, **dict(attacks)}
    fig = _figure(height=1.6 + 1.5 * len(groups))
    axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
    bins = np.linspace(0.0, 1.0, _BINS + 1)
    for i, (ax, (name, scores)) in enumerate(zip(axes, groups.items(), strict=True)):
        colour = "tab:blue" if i == 0 else f"C{i}"
        ax.hist(scores, bins=bins, color=colour, alpha=0.75)
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
        ax.set_ylabel("count", fontsize="small")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{name} (n={scores.size})", fontsize="small", loc="left")
    axes[-1].set_xlabel(f"spoof score (refused above the threshold {threshold:.3f}, dashed)")
    axes[-1].set_xlim(0.0, 1.0)
    fig.suptitle(title, fontsize="medium")
    fig.savefig(path, dpi=_DPI)


def _probit(rates: FloatArray) -> FloatArray:
    return np.array([_NORMAL.inv_cdf(float(r)) for r in rates.reshape(-1)], dtype=np.float64)


def _figure(height: float = 5.5) -> Figure:
    fig = Figure(figsize=(8, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig
