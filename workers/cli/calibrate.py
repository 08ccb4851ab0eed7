"""``faceauth calibrate``: decision thresholds from photos on disk or the enrolled templates.

The command lives in ``workers``, not ``shared``: both modes drive worker code
(``workers.pipeline.calibration``), DIRECTORY mode also loads the face pack, and shared
may not import workers. The maths (scores, thresholds, report, plots) stays in
``shared.calibration``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from shared.cli.output import console
from shared.config import get_settings

if TYPE_CHECKING:
    from shared.calibration import CalibrationReport


def calibrate(
    directory: Path | None = typer.Argument(
        None, exists=True, file_okay=False, help="one folder of photos per person"
    ),
    report: Path = typer.Option(Path("calibration/report.json"), help="report JSON path"),
    plots: Path | None = typer.Option(None, help="folder for histogram and DET PNGs"),
    from_db: bool = typer.Option(False, "--from-db", help="use the enrolled templates instead"),
    face_pack: Path | None = typer.Option(None, help="model pack (default: settings)"),
    save: bool = typer.Option(False, help="store the calibration in the database"),
    activate: bool = typer.Option(False, help="store it and make it the active thresholds"),
) -> None:
    """Genuine/impostor scores → T_low, T_high, FMR-target thresholds, EER, ROC-AUC."""
    from shared.calibration.plots import write_plots

    settings = get_settings()
    if from_db == (directory is not None):
        raise typer.BadParameter("give either DIRECTORY or --from-db")
    if from_db:
        import psycopg
        from pgvector.psycopg import register_vector

        from shared.db.templates import active_model_version
        from workers.pipeline.calibration import calibrate_enrolled

        with psycopg.connect(settings.database_dsn()) as conn:
            register_vector(conn)
            version = active_model_version(conn)
            if version is None:
                raise typer.BadParameter("no model version is registered (nothing enrolled)")
            result = calibrate_enrolled(conn, model_version=version)
    else:
        from workers.inference.face_pack import FacePack
        from workers.pipeline.calibration import calibrate_photos

        pack = FacePack.load(
            face_pack or settings.face_pack_dir,
            det_size=settings.face_det_size,
            providers=settings.ort_providers,
        )
        assert directory is not None
        result = calibrate_photos(directory, pack, settings)
    report.parent.mkdir(parents=True, exist_ok=True)
    result.write(report)
    table = Table("quantity", "value")
    table.add_row("model version", result.model_version)
    table.add_row(
        "genuine / impostor pairs", f"{len(result.genuine_scores)} / {len(result.impostor_scores)}"
    )
    table.add_row("T_low (P99 impostor)", f"{result.t_low:.4f}")
    table.add_row("T_high (P10 genuine)", f"{result.t_high:.4f}")
    table.add_row("EER", f"{result.eer:.4f}")
    table.add_row("ROC-AUC", f"{result.roc_auc:.4f}")
    for target in result.fmr_targets:
        value = "n/a" if target.threshold is None else f"{target.threshold:.4f}"
        note = "" if target.supported else " (not supported by the data)"
        table.add_row(f"threshold @ FMR {target.target:g}", value + note)
    fta = result.failure_to_acquire
    if fta is not None:
        table.add_row(
            "failure to acquire (FTA)", f"{fta.failures} / {fta.attempts} = {fta.rate:.2%}"
        )
        for reason in fta.by_reason:
            table.add_row(f"  FTA {reason.code}", f"{reason.count} = {reason.rate:.2%}")
    console.print(table)
    console.print(operating_point_table(result))
    if plots is not None:
        files = write_plots(result, plots)
        console.print(f"plots: {files.histogram}, {files.det_curve}")
    if save or activate:
        import psycopg

        from shared.db.calibrations import save_calibration
        from workers.pipeline.calibration import stored_summary

        with psycopg.connect(settings.database_dsn()) as conn:
            cal_id = save_calibration(
                conn,
                model_version=result.model_version,
                t_low=result.t_low,
                t_high=result.t_high,
                report=stored_summary(result),
                activate=activate,
            )
        console.print(f"saved calibration {cal_id}{' (active)' if activate else ''}")
    console.print(f"report: {report}")


def operating_point_table(result: CalibrationReport) -> Table:
    """FMR, FNMR of the acquired photos and generalized FNMR at each operating point."""
    table = Table(
        "operating point",
        "threshold",
        "FMR",
        "FNMR (acquired)",
        "generalized FNMR",
        title="error rates (generalized FNMR = FTA + (1 - FTA) x FNMR, ISO/IEC 19795-1)",
    )
    for point in result.operating_points:
        gfnmr = "n/a (FTA unknown)" if point.gfnmr is None else f"{point.gfnmr:.4f}"
        table.add_row(
            point.name, f"{point.threshold:.4f}", f"{point.fmr:.4f}", f"{point.fnmr:.4f}", gfnmr
        )
    return table
