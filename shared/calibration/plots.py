"""PNG plots of a calibration report: score histogram and DET curve.

Figures are built on ``matplotlib.figure.Figure`` with an explicit Agg canvas, never
through ``pyplot``: pyplot keeps global state and may try a GUI backend, neither of which
belongs in a worker process or a headless CLI. Plots read only the report, so an existing
``report.json`` can be re-plotted without the photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from shared.calibration.report import CalibrationReport
from shared.calibration.thresholds import det_curve

HISTOGRAM_FILE = "score_histogram.png"
DET_FILE = "det_curve.png"
_DPI = 120
_BINS = 50
# Standard DET tick positions; only those inside the plotted range are drawn.
_DET_TICKS = (1e-5, 1e-4, 1e-3, 1e-2, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95, 0.99)
_NORMAL = NormalDist()


@dataclass(frozen=True)
class PlotFiles:
    histogram: Path
    det_curve: Path


def write_plots(report: CalibrationReport, out_dir: Path) -> PlotFiles:
    """Write ``score_histogram.png`` and ``det_curve.png`` into ``out_dir`` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = PlotFiles(histogram=out_dir / HISTOGRAM_FILE, det_curve=out_dir / DET_FILE)
    plot_histogram(report, files.histogram)
    plot_det_curve(report, files.det_curve)
    return files


def plot_histogram(report: CalibrationReport, path: Path) -> None:
    """Genuine vs impostor score densities with the decision thresholds marked."""
    fig = _figure()
    ax = fig.add_subplot()
    genuine = np.asarray(report.genuine_scores)
    impostor = np.asarray(report.impostor_scores)
    mean_template = np.asarray(report.mean_template_impostor_scores)
    everything = np.concatenate([genuine, impostor, mean_template])
    bins = np.linspace(float(everything.min()), float(everything.max()), _BINS + 1).tolist()
    # Densities, not counts: impostor pairs outnumber genuine ones by orders of magnitude.
    ax.hist(
        impostor,
        bins=bins,
        density=True,
        alpha=0.55,
        color="tab:red",
        label=f"impostor pairs (n={impostor.size})",
    )
    ax.hist(
        genuine,
        bins=bins,
        density=True,
        alpha=0.55,
        color="tab:blue",
        label=f"genuine pairs (n={genuine.size})",
    )
    if mean_template.size:
        ax.hist(
            mean_template,
            bins=bins,
            density=True,
            histtype="step",
            color="tab:orange",
            linewidth=1.5,
            label=f"mean-template impostor (n={mean_template.size})",
        )
    _mark_thresholds(ax, report)
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(f"Score distributions — {report.model_name} {report.model_version}")
    ax.legend(fontsize="small", loc="upper left")
    fig.savefig(path, dpi=_DPI)


def plot_det_curve(report: CalibrationReport, path: Path) -> None:
    """FNMR against FMR on normal-deviate axes, with the operating points marked."""
    curve = det_curve(report.genuine_scores, report.impostor_scores)
    # probit(0) is -inf: rates of zero (and one) are drawn at the plot's edge, half a pair
    # beyond the smallest rate the larger score list can measure.
    lo = 0.5 / max(report.counts.impostor_pairs, report.counts.genuine_pairs)
    hi = 1.0 - lo
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(
        _probit(np.clip(curve.fmr, lo, hi)),
        _probit(np.clip(curve.fnmr, lo, hi)),
        color="tab:blue",
        label="DET",
    )
    ax.plot(
        _probit(np.array([lo, hi])),
        _probit(np.array([lo, hi])),
        color="grey",
        linestyle=":",
        linewidth=1,
        label="FMR = FNMR",
    )
    # Several operating points often coincide (unsupported FMR targets all sit just above
    # the highest impostor score): one marker and one joined label per position.
    labels: dict[tuple[float, float], list[str]] = {}
    for point in report.operating_points:
        xy = _probit(np.clip(np.array([point.fmr, point.fnmr]), lo, hi))
        labels.setdefault((float(xy[0]), float(xy[1])), []).append(
            f"{point.name} ({point.threshold:.3f})"
        )
    for (x, y), names in labels.items():
        ax.plot([x], [y], marker="o", linestyle="none", markersize=5)
        ax.annotate(
            ", ".join(names),
            (x, y),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize="x-small",
        )
    ticks = [t for t in _DET_TICKS if lo <= t <= hi]
    tick_pos = _probit(np.array(ticks))
    tick_labels = [f"{100 * t:g}%" for t in ticks]
    ax.set_xticks(tick_pos, tick_labels, fontsize="small")
    ax.set_yticks(tick_pos, tick_labels, fontsize="small")
    limits = _probit(np.array([lo, hi]))
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_xlabel("false match rate (FMR)")
    ax.set_ylabel("false non-match rate (FNMR)")
    ax.set_title(f"DET — EER {100 * report.eer:.2f}%, ROC-AUC {report.roc_auc:.4f}")
    ax.grid(True, linewidth=0.4, alpha=0.6)
    ax.legend(fontsize="small", loc="upper right")
    fig.savefig(path, dpi=_DPI)


def _mark_thresholds(ax: Axes, report: CalibrationReport) -> None:
    ax.axvline(
        report.t_low,
        color="darkred",
        linewidth=1.8,
        label=f"t_low (reject below) {report.t_low:.3f}",
    )
    ax.axvline(
        report.t_high,
        color="darkgreen",
        linewidth=1.8,
        label=f"t_high (accept) {report.t_high:.3f}",
    )
    ax.axvline(
        report.eer_threshold,
        color="grey",
        linestyle=":",
        label=f"EER {100 * report.eer:.2f}% at {report.eer_threshold:.3f}",
    )
    for target in report.fmr_targets:
        if target.threshold is None:
            continue
        note = "" if target.supported else " (unsupported)"
        ax.axvline(
            target.threshold,
            color="purple",
            linestyle="--",
            linewidth=0.9,
            alpha=0.8 if target.supported else 0.35,
            label=f"FMR {target.target:g}: {target.threshold:.3f}{note}",
        )


def _probit(rates: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Normal quantiles of rates in (0, 1), computed once per distinct rate."""
    distinct, inverse = np.unique(rates, return_inverse=True)
    quantiles = np.array([_NORMAL.inv_cdf(float(r)) for r in distinct], dtype=np.float64)
    return quantiles[inverse.reshape(rates.shape)]


def _figure() -> Figure:
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    return fig
