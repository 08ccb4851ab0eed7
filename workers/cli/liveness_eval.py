"""``faceauth liveness evaluate`` (ISO/IEC 30107-3 metrics of a liveness model on a labelled
set) and the per-channel liveness thresholds it can store: ``liveness calibrations`` lists
them, ``liveness activate`` switches one on.

Exit status of ``evaluate``: 0 when the report is written, 1 when a model cannot be
loaded, 2 for usage errors (bad folder or manifest, nothing scorable, saving an
unsupported target threshold without ``--allow-unsupported``).

Choosing the stored threshold: ``--target-apcer X`` takes the highest threshold whose
worst-species APCER is <= X (the fewest bona fide refusals that keep attacks under X),
``--target-bpcer X`` the lowest whose BPCER is <= X, ``--threshold T`` takes T as given;
without any of them the report is at FACEAUTH_LIVENESS_THRESHOLD and ``--save`` refuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from shared.config import get_settings

if TYPE_CHECKING:
    from shared.pad.metrics import PadEvaluation

EXIT_LOAD_FAILED = 1
EXIT_USAGE = 2
REPORT_FILE = "report.json"


def evaluate(
    directory: Annotated[
        Path | None,
        typer.Argument(
            help="live/ and one folder per attack species (or spoof/<species>/)",
            file_okay=False,
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="CSV: path,label,species[,subject] (instead of DIR)"),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="folder for report.json and the PNG plots")
    ] = Path("liveness-eval"),
    model_dir: Annotated[
        Path | None,
        typer.Option("--model-dir", help="liveness model folder [FACEAUTH_LIVENESS_MODEL_DIR]"),
    ] = None,
    face_pack: Annotated[
        Path | None,
        typer.Option("--face-pack", help="pack with the face detector [FACEAUTH_FACE_PACK_DIR]"),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", min=0.0, max=1.0, help="operating threshold, as given"),
    ] = None,
    target_apcer: Annotated[
        float | None,
        typer.Option(
            "--target-apcer",
            min=0.0001,
            max=0.9999,
            help="choose the threshold: highest with every species' APCER <= this",
        ),
    ] = None,
    target_bpcer: Annotated[
        float | None,
        typer.Option(
            "--target-bpcer",
            min=0.0001,
            max=0.9999,
            help="choose the threshold: lowest with BPCER <= this",
        ),
    ] = None,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", min=0, help="bootstrap replicates for the CIs")
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="bootstrap random seed")] = 0,
    confidence: Annotated[
        float, typer.Option("--confidence", min=0.5, max=0.999, help="CI level")
    ] = 0.95,
    channel: Annotated[
        str | None,
        typer.Option("--channel", help="capture channel to store the threshold for (mobile, ...)"),
    ] = None,
    save: Annotated[bool, typer.Option("--save", help="store the threshold for --channel")] = False,
    activate: Annotated[
        bool, typer.Option("--activate", help="store it and make it the channel's active one")
    ] = False,
    allow_unsupported: Annotated[
        bool,
        typer.Option(
            "--allow-unsupported", help="store a target threshold the counts do not support"
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report JSON")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """ISO/IEC 30107-3 metrics of the liveness model on a labelled set, with CIs.

    APCER per attack species and the worst one, BPCER, ACER, BPCER at APCER 1/5/10 %,
    APCER at BPCER 1/5 %, EER and ROC-AUC; report.json, a DET curve and score histograms.
    """
    from shared.db.liveness_calibrations import valid_channel
    from shared.pad.samples import PadSetError, samples_from_folder, samples_from_manifest
    from shared.schemas import CHANNEL_PATTERN

    settings = get_settings()
    if (directory is None) == (manifest is None):
        _usage("give either DIR or --manifest")
    if sum(x is not None for x in (threshold, target_apcer, target_bpcer)) > 1:
        _usage("give at most one of --threshold, --target-apcer, --target-bpcer")
    storing = save or activate
    if storing:
        if channel is None or not valid_channel(channel):
            _usage(f"--save/--activate need --channel matching {CHANNEL_PATTERN}")
        if threshold is None and target_apcer is None and target_bpcer is None:
            _usage("--save/--activate need --threshold, --target-apcer or --target-bpcer")
    try:
        samples = (
            samples_from_folder(directory)
            if directory is not None
            else samples_from_manifest(manifest)  # type: ignore[arg-type]
        )
    except PadSetError as exc:
        _usage(str(exc))
    scorer, pack = _load_models(model_dir, face_pack)

    from shared.pad.plots import DET_FILE, HISTOGRAM_FILE, plot_det, plot_histograms
    from workers.pipeline import pad_evaluation as pe

    scored = pe.score_samples(samples, scorer, pack, settings, progress=progress)
    bona, attacks = pe.group_scores(scored)
    if bona.size == 0 and not any(a.size for a in attacks.values()):
        _usage("no image could be scored (every one is a failure to acquire)")
    try:
        choice = pe.choose_threshold(
            bona.tolist(),
            {s: a.tolist() for s, a in attacks.items()},
            threshold=threshold,
            target_apcer=target_apcer,
            target_bpcer=target_bpcer,
            default=settings.liveness_threshold,
        )
    except ValueError as exc:
        _usage(str(exc))
    evaluation = pe.evaluate_set(
        scored, choice=choice, bootstrap=bootstrap, seed=seed, confidence=confidence
    )
    source = directory if directory is not None else manifest
    assert source is not None
    report = pe.build_report(
        scored=scored,
        evaluation=evaluation,
        choice=choice,
        scorer=scorer,
        source=source,
        face_model_version=pack.model_version,
    )
    out.mkdir(parents=True, exist_ok=True)
    title = f"{scorer.name} {scorer.version} on {source.name}"
    plot_det(bona, attacks, out / DET_FILE, threshold=choice.threshold, title=title)
    plot_histograms(bona, attacks, out / HISTOGRAM_FILE, threshold=choice.threshold, title=title)
    report["plots"] = {"det_curve": str(out / DET_FILE), "histograms": str(out / HISTOGRAM_FILE)}

    if storing:
        assert channel is not None
        if not choice.supported and not allow_unsupported:
            (out / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
            _usage(
                f"not saved: the threshold for {choice.how} {choice.target} is not supported"
                f" by the counts ({choice.reason}); add --allow-unsupported to store it anyway"
            )
        report["calibration"] = _store(
            settings, report, channel=channel, scorer=scorer, choice=choice, activate=activate
        )
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console = Console()
    _print_report(console, report, evaluation)
    console.print(f"report: {out / REPORT_FILE}; plots: {out / DET_FILE}, {out / HISTOGRAM_FILE}")
    if "calibration" in report:
        cal = report["calibration"]
        state = "active" if cal["active"] else "saved, not active"
        console.print(
            f"liveness calibration {cal['calibration_id']} for channel {cal['channel']!r}:"
            f" threshold {cal['threshold']:.4f} ({state})"
        )


def _load_models(model_dir: Path | None, face_pack: Path | None) -> tuple[Any, Any]:
    from workers.cli.liveness_models import load_models

    return load_models(model_dir, face_pack)


def _store(
    settings: Any,
    report: dict[str, Any],
    *,
    channel: str,
    scorer: Any,
    choice: Any,
    activate: bool,
) -> dict[str, Any]:
    import psycopg

    from shared.db.liveness_calibrations import save_liveness_calibration
    from workers.pipeline.pad_evaluation import stored_summary

    with psycopg.connect(settings.database_dsn()) as conn:
        calibration_id = save_liveness_calibration(
            conn,
            channel=channel,
            model_name=scorer.name,
            model_version=scorer.version,
            threshold=choice.threshold,
            report=stored_summary(report),
            activate=activate,
        )
    return {
        "calibration_id": str(calibration_id),
        "channel": channel,
        "threshold": choice.threshold,
        "active": activate,
    }


def _fmt(e: dict[str, Any], *, pct: bool = True) -> tuple[str, str, str]:
    if e["value"] is None:
        return "-", "-", "undefined"
    scale, unit = (100.0, "%") if pct else (1.0, "")
    value = f"{scale * e['value']:.2f}{unit}"
    ci = "-" if e["ci_low"] is None else f"[{scale * e['ci_low']:.2f}, {scale * e['ci_high']:.2f}]"
    return value, ci, "" if e["supported"] else "[yellow]unsupported[/]"


def _print_report(console: Console, report: dict[str, Any], evaluation: PadEvaluation) -> None:
    from shared.pad.metrics import MIN_RATE_SAMPLES

    m = report["metrics"]
    op = report["operating_threshold"]
    table = Table(
        title=f"ISO/IEC 30107-3 — {report['model']['name']} {report['model']['version']},"
        f" threshold {op['threshold']:.4f} ({op['chosen_by']})"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column(f"{100 * evaluation.confidence:g}% CI", justify="right")
    table.add_column("n", justify="right")
    table.add_column("note", overflow="fold")
    for species, e in m["apcer"].items():
        table.add_row(f"APCER {species}", *_row(e, m["n_attacks"][species]))
    table.add_row(f"APCER max ({m['apcer_max']['species']})", *_row(m["apcer_max"], None))
    table.add_row("BPCER", *_row(m["bpcer"], m["n_bona_fide"]))
    table.add_row("ACER", *_row(m["acer"], None))
    for name, e in m["bpcer_at_apcer"].items():
        table.add_row(f"BPCER @ APCER {name}", *_row(e, None))
    for name, e in m["apcer_at_bpcer"].items():
        table.add_row(f"APCER @ BPCER {name}", *_row(e, None))
    table.add_row("EER", *_row(m["eer"], None))
    table.add_row("ROC-AUC", *_row(m["roc_auc"], None, pct=False))
    console.print(table)
    console.print(
        f"unsupported: fewer than {MIN_RATE_SAMPLES} presentations behind a rate, or fewer"
        " than ceil(3 / target) for an operating point (rule of 3); reasons in the report"
    )
    fta = Table(title="Failures to acquire (not in the rates above)")
    for column in ("group", "presentations", "failures", "rate", "reasons"):
        fta.add_column(column)
    for group, f in report["failures_to_acquire"].items():
        reasons = ", ".join(f"{k}: {v}" for k, v in f["by_reason"].items()) or "-"
        fta.add_row(
            group,
            str(f["presentations"]),
            str(f["failures"]),
            f"{f['rate_name']} {100 * f['rate']:.1f}%",
            reasons,
        )
    console.print(fta)


def _row(e: dict[str, Any], n: int | None, *, pct: bool = True) -> tuple[str, str, str, str]:
    value, ci, note = _fmt(e, pct=pct)
    return value, ci, "" if n is None else str(n), note


def calibrations(
    channel: Annotated[str | None, typer.Option("--channel", help="only this channel")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Saved liveness thresholds per channel, newest first (the active one marked)."""
    import psycopg

    from shared.db.liveness_calibrations import list_liveness_calibrations

    with psycopg.connect(get_settings().database_dsn()) as conn:
        rows = list_liveness_calibrations(conn, channel=channel)
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "calibration_id": str(r.calibration_id),
                        "channel": r.channel,
                        "model_name": r.model_name,
                        "model_version": r.model_version,
                        "threshold": r.threshold,
                        "is_active": r.is_active,
                        "created_at": r.created_at.isoformat(),
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    table = Table(title="Liveness calibrations")
    for column in ("id", "channel", "model", "threshold", "active", "created"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            str(r.calibration_id),
            r.channel,
            f"{r.model_name} {r.model_version}",
            f"{r.threshold:.4f}",
            "[green]yes[/]" if r.is_active else "no",
            r.created_at.isoformat(timespec="seconds"),
        )
    Console().print(table)


def activate_calibration(
    calibration_id: Annotated[UUID, typer.Argument(help="id from `liveness calibrations`")],
) -> None:
    """Make a saved liveness calibration the active threshold of its channel and model."""
    import psycopg

    from shared.db.liveness_calibrations import activate_liveness_calibration

    with psycopg.connect(get_settings().database_dsn()) as conn:
        found = activate_liveness_calibration(conn, calibration_id)
    if not found:
        _usage(f"no liveness calibration {calibration_id}")
    typer.echo(f"activated liveness calibration {calibration_id}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("calibrations")(calibrations)
    app.command("activate")(activate_calibration)


def _usage(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(EXIT_USAGE)


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(EXIT_LOAD_FAILED)


__all__ = ["evaluate", "register"]
