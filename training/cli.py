"""``faceauth train ...``: the training sub-commands.

Contributed to ``faceauth`` through the ``faceauth.commands`` entry-point group
(``register``). torch, timm and mediapipe are imported only when a command runs, so
``faceauth --help`` stays fast; where the training extra is not installed, ``train`` is
listed as unavailable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.cli.plugins import mount_group
from shared.config import get_settings
from training.liveness.config import Balance, DetectorChoice, Precision, TrainConfig

# Top-level modules of the 'training' extra that ``train liveness`` imports.
TRAINING_RUNTIME = ("torch", "timm", "mediapipe")


def default_serving_face_pack() -> Path | None:
    """The workers' pack (``FACEAUTH_FACE_PACK_DIR``, or its default) when it exists here."""
    pack = Path(get_settings().face_pack_dir).expanduser()
    return pack if pack.is_dir() else None


app = typer.Typer(help="Train models offline (needs the 'training' extra).", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Train models offline (needs the 'training' extra)."""
    # A callback keeps this a command group even with one command, so the command is
    # spelled ``liveness`` both here and when mounted as ``faceauth train``.


@app.command("liveness")
def liveness(
    data: Annotated[
        Path | None,
        typer.Argument(
            help="folder with live/ and spoof/<species>/ or live/ beside one folder per "
            "species (omit with --manifest); with --celeba-spoof: the dataset root"
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="output folder for the run")] = Path(
        "runs/liveness"
    ),
    manifest: Annotated[
        Path | None,
        typer.Option(help="CSV: path,label[,attack_type][,subject_id][,split] (header: any order)"),
    ] = None,
    celeba_spoof: Annotated[
        list[Path] | None,
        typer.Option(
            "--celeba-spoof",
            help="CelebA-Spoof label file (metas/.../train_label.json or .txt); repeatable",
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    input_size: Annotated[int, typer.Option(min=32, help="model input side (B2: 260)")] = 260,
    crop_scale: Annotated[float, typer.Option(min=1.0, help="face box growth factor")] = 1.6,
    patience: Annotated[int, typer.Option(min=1, help="early-stopping patience")] = 5,
    max_steps_per_epoch: Annotated[int | None, typer.Option(min=1)] = None,
    imagenet_weights: Annotated[
        Path | None, typer.Option(help="local efficientnet_b2 .safetensors (never downloaded)")
    ] = None,
    seed: Annotated[int, typer.Option()] = 42,
    lr: Annotated[float, typer.Option()] = 1e-3,
    weight_decay: Annotated[float, typer.Option()] = 1e-4,
    val_fraction: Annotated[float, typer.Option()] = 0.15,
    test_fraction: Annotated[float, typer.Option()] = 0.15,
    threshold: Annotated[float, typer.Option(help="spoof-score decision threshold")] = 0.5,
    detector: Annotated[
        str, typer.Option(help="MediaPipe BlazeFace model: short, full or auto")
    ] = "auto",
    cache_dir: Annotated[Path | None, typer.Option(help="crop cache (default OUT/crop_cache)")] = (
        None
    ),
    device: Annotated[str | None, typer.Option(help="torch device (default: cuda if any)")] = None,
    num_workers: Annotated[
        int | None,
        typer.Option(min=0, help="data-loading processes (default: several on CUDA, 0 on CPU)"),
    ] = None,
    precision: Annotated[
        str, typer.Option(help="auto (bf16, else fp16 on CUDA; fp32 on CPU), fp32, fp16, bf16")
    ] = "auto",
    balance: Annotated[
        str,
        typer.Option(help="class balancing: none, sampler (WeightedRandomSampler) or loss"),
    ] = "none",
    resume: Annotated[
        bool, typer.Option(help="continue from OUT/checkpoints/last.pt when it exists")
    ] = False,
    version: Annotated[str | None, typer.Option(help="model version (default: UTC run id)")] = (
        None
    ),
    serving_face_pack: Annotated[
        Path | None,
        typer.Option(
            help="InsightFace pack the workers serve with; its SCRFD boxes calibrate the "
            "exported crop (default: FACEAUTH_FACE_PACK_DIR when that folder exists)"
        ),
    ] = None,
    no_serving_face_pack: Annotated[
        bool, typer.Option(help="skip box calibration even when a face pack is configured")
    ] = False,
) -> None:
    """Train the EfficientNet-B2 liveness model and export it as a deployable ONNX folder."""
    choices: dict[str, DetectorChoice] = {"short": "short", "full": "full", "auto": "auto"}
    if detector not in choices:
        raise typer.BadParameter("must be short, full or auto", param_hint="--detector")
    det = choices[detector]
    precisions: dict[str, Precision] = {
        "auto": "auto",
        "fp32": "fp32",
        "fp16": "fp16",
        "bf16": "bf16",
    }
    if precision not in precisions:
        raise typer.BadParameter("must be auto, fp32, fp16 or bf16", param_hint="--precision")
    balances: dict[str, Balance] = {"none": "none", "sampler": "sampler", "loss": "loss"}
    if balance not in balances:
        raise typer.BadParameter("must be none, sampler or loss", param_hint="--balance")
    if no_serving_face_pack and serving_face_pack is not None:
        raise typer.BadParameter(
            "give --serving-face-pack or --no-serving-face-pack, not both",
            param_hint="--serving-face-pack",
        )
    pack = None if no_serving_face_pack else serving_face_pack or default_serving_face_pack()
    try:
        config = TrainConfig(
            out_dir=out,
            data_dir=data,
            manifest=manifest,
            celeba_spoof=tuple(celeba_spoof or ()),
            epochs=epochs,
            batch_size=batch_size,
            input_size=input_size,
            crop_scale=crop_scale,
            patience=patience,
            max_steps_per_epoch=max_steps_per_epoch,
            imagenet_weights=imagenet_weights,
            seed=seed,
            lr=lr,
            weight_decay=weight_decay,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            threshold=threshold,
            detector=det,
            cache_dir=cache_dir,
            device=device,
            num_workers=num_workers,
            precision=precisions[precision],
            balance=balances[balance],
            resume=resume,
            version=version,
            serving_face_pack=pack,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    # Progress is logged under ``training.*``; the ``faceauth`` root applies FACEAUTH_LOG_LEVEL.
    from training.liveness.train import train_liveness  # heavy: torch, timm, mediapipe

    result = train_liveness(config)
    summary: dict[str, Any] = {
        "model_folder": str(result.onnx_path.parent),
        "onnx": str(result.onnx_path),
        "evaluation": str(result.evaluation_path),
        "unusable_images": str(result.preprocess_report_path),
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "device": result.device,
        "precision": result.precision,
        "resumed_from_epoch": result.resumed_from,
        "serving_face_pack": str(pack) if pack is not None else None,
        "metrics": result.metrics,
    }
    typer.echo(json.dumps(summary, indent=2))


def register(root: typer.Typer) -> None:
    """Contribute ``train`` to the ``faceauth`` root."""
    mount_group(
        root,
        "train",
        "Training jobs (needs the 'training' extra).",
        lambda: app,
        requires=TRAINING_RUNTIME,
    )
