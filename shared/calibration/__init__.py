"""Verification threshold calibration: scores, thresholds, report, plots.

numpy + matplotlib only (no inference imports), so the CLI, the worker job and tests can
all use it. Typical use::

    report = calibrate_directory(root, embed, model_name="buffalo_l", model_version="...")
    report.write(Path("report.json"))
    write_plots(report, Path("plots"))

The database job builds ``{user_id: templates}`` itself and calls :func:`build_report`.
``plots`` is not imported here so that importing the package does not load matplotlib.
"""

from shared.calibration.directory import SkipImage, calibrate_directory
from shared.calibration.report import (
    CalibrationReport,
    FailureToAcquire,
    SkippedImage,
    build_report,
    failure_to_acquire,
    generalized_fnmr,
)
from shared.calibration.scores import CalibrationScores, PairScores, compute_scores
from shared.calibration.thresholds import (
    DEFAULT_FMR_TARGETS,
    FallbackStrategy,
    band_thresholds,
    equal_error_rate,
    roc_auc,
    summarise,
    threshold_at_fmr,
)

__all__ = [
    "DEFAULT_FMR_TARGETS",
    "CalibrationReport",
    "CalibrationScores",
    "FailureToAcquire",
    "FallbackStrategy",
    "PairScores",
    "SkipImage",
    "SkippedImage",
    "band_thresholds",
    "build_report",
    "calibrate_directory",
    "compute_scores",
    "equal_error_rate",
    "failure_to_acquire",
    "generalized_fnmr",
    "roc_auc",
    "summarise",
    "threshold_at_fmr",
]
