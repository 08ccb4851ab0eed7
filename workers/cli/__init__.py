"""The commands ``workers`` contributes to ``faceauth``: those that load models or run
worker code (quality scan, liveness score, calibrate, model info).

Registered through the ``faceauth.commands`` entry-point group (pyproject.toml). The
modules here import only light things at module level; the face pack, ONNX Runtime and
InsightFace are imported when a command runs. A command whose model runtime is missing
here stays listed as unavailable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from shared.cli.plugins import group, mount_command, mount_group

MODEL_RUNTIME = ("onnxruntime", "insightface")


def _quality() -> typer.Typer:
    from workers.cli.quality import app

    return app


def _liveness() -> typer.Typer:
    from workers.cli.liveness import app

    return app


def _calibrate() -> Callable[..., Any]:
    from workers.cli.calibrate import calibrate

    return calibrate


def _model_info() -> Callable[..., Any]:
    from workers.cli.model import info

    return info


def register(app: typer.Typer) -> None:
    # calibrate has no ``requires``: its --from-db mode needs no model runtime.
    mount_command(
        app, "calibrate", "Genuine/impostor scores → thresholds, EER, ROC-AUC.", _calibrate
    )
    mount_group(app, "quality", "Quality scan without enrolling.", _quality, requires=MODEL_RUNTIME)
    mount_group(
        app,
        "liveness",
        "Liveness (presentation attack) scoring.",
        _liveness,
        requires=MODEL_RUNTIME,
    )
    mount_command(
        group(app, "model", "Embedding model versions and migration."),
        "info",
        "Load the configured face pack and print its version and dimension.",
        _model_info,
        requires=MODEL_RUNTIME,
    )
