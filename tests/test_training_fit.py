"""The training loop's machinery on the CPU: resume, class balancing, device choices.

Real EfficientNet-B2 training steps on tiny synthetic crops (32 px, no face detection): an
interrupted and resumed run must end where an uninterrupted one does, bit for bit; the
balanced sampler and loss weights must even out an imbalanced set; and mixed precision,
channels-last and loader workers must be chosen only for a CUDA device.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.training

for _module in ("torch", "timm"):
    pytest.importorskip(_module, reason=f"{_module} not importable: install the 'training' extra")

import cv2  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from training.liveness.accel import (  # noqa: E402
    autocast,
    loader_options,
    make_scaler,
    plan_amp,
    resolve_num_workers,
)
from training.liveness.balance import (  # noqa: E402
    balanced_sampler,
    class_loss_weights,
    sample_weights,
)
from training.liveness.config import TrainConfig  # noqa: E402
from training.liveness.data import Sample  # noqa: E402
from training.liveness.model import save_weights  # noqa: E402
from training.liveness.preprocess import CroppedSample  # noqa: E402
from training.liveness.resume import STATE_FILENAME  # noqa: E402
from training.liveness.train import FitResult, _loader, fit  # noqa: E402

SIZE = 32


def _crops(root: Path, n_live: int, n_spoof: int, split: str) -> list[CroppedSample]:
    """Live crops are smooth gradients, spoof crops carry stripes (a learnable difference)."""
    rng = np.random.default_rng(len(split) * 1000 + n_live * 10 + n_spoof)
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n_live + n_spoof):
        label = 0 if i < n_live else 1
        base = np.linspace(40, 200, SIZE, dtype=np.float32)[None, :, None].repeat(SIZE, 0)
        image = base + rng.normal(0, 8, (SIZE, SIZE, 3))
        if label:
            image[::3] += 60.0
        path = root / f"{split}_{i}.png"
        cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8))
        sample = Sample(path, label, "live" if label == 0 else "print", split=split)  # type: ignore[arg-type]
        items.append(CroppedSample(sample, path, 1.0))
    return items


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[CroppedSample], ...]:
    root = tmp_path_factory.mktemp("crops")
    return _crops(root, 4, 4, "train"), _crops(root, 2, 2, "val")


def _config(out: Path, **overrides: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "out_dir": out,
        "data_dir": out,  # unused by fit(); a config needs a data source
        "epochs": 3,
        "batch_size": 4,
        "input_size": SIZE,
        "patience": 5,
        "device": "cpu",
        "seed": 7,
        **overrides,
    }
    return TrainConfig(**settings)


class _Interrupted(Exception):
    pass


def _stop_after(epoch: int) -> Any:
    def hook(done: int) -> None:
        if done == epoch:
            raise _Interrupted

    return hook


def _comparable(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "seconds"} for e in log]


def test_resumed_run_equals_uninterrupted_run(
    data: tuple[list[CroppedSample], ...], tmp_path: Path
) -> None:
    train, val = data
    cpu = torch.device("cpu")
    # fp16 asked for, but this is the CPU: plain fp32, default memory layout.
    straight = fit(_config(tmp_path / "a", precision="fp16"), train, val, cpu)
    assert straight.epochs_run == 3 and straight.resumed_from == 0
    assert straight.plan.name == "fp32" and not straight.plan.channels_last

    interrupted = _config(tmp_path / "b", precision="fp16")
    with pytest.raises(_Interrupted):
        fit(interrupted, train, val, cpu, on_epoch_end=_stop_after(1))
    state = tmp_path / "b" / "checkpoints" / STATE_FILENAME
    assert state.is_file()
    assert not [p for p in state.parent.iterdir() if p.name.endswith(".tmp")]  # atomic writes

    resumed = fit(_config(tmp_path / "b", precision="fp16", resume=True), train, val, cpu)
    assert resumed.resumed_from == 1 and resumed.epochs_run == 3
    assert _comparable(resumed.epoch_log) == _comparable(straight.epoch_log)
    assert resumed.best_epoch == straight.best_epoch
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The resumed run trained, it did not just reload: epochs 2 and 3 moved the weights.
    assert straight.epoch_log[1]["train_loss"] != straight.epoch_log[0]["train_loss"]

    # A crash after best.safetensors was written but before last.pt leaves the file newer
    # than the state: resuming rewrites it from the state's best weights.
    best_file = state.parent / "best.safetensors"
    save_weights({k: torch.zeros_like(v) for k, v in load_file(str(best_file)).items()}, best_file)
    # Resuming a finished run trains nothing more and returns the same best model.
    again = fit(_config(tmp_path / "b", precision="fp16", resume=True), train, val, cpu)
    assert again.resumed_from == 3 and again.epochs_run == 3
    assert all(torch.equal(again.model.state_dict()[k], b[k]) for k in b)


def test_resume_refuses_other_settings_and_starts_afresh_without_state(
    data: tuple[list[CroppedSample], ...], tmp_path: Path
) -> None:
    train, val = data
    cpu = torch.device("cpu")
    with pytest.raises(_Interrupted):
        fit(_config(tmp_path, epochs=2), train, val, cpu, on_epoch_end=_stop_after(1))
    with pytest.raises(ValueError, match="other training settings"):
        fit(_config(tmp_path, epochs=2, lr=5e-4, resume=True), train, val, cpu)
    fresh: FitResult = fit(_config(tmp_path / "new", epochs=1, resume=True), train, val, cpu)
    assert fresh.resumed_from == 0 and fresh.epochs_run == 1


def test_amp_and_loader_choices_per_device() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for precision in ("auto", "fp32", "fp16", "bf16"):
        plan = plan_amp(cpu, precision)  # type: ignore[arg-type]
        assert (plan.dtype, plan.use_scaler, plan.channels_last) == (None, False, False)
        assert isinstance(autocast(plan), contextlib.nullcontext)
        assert not make_scaler(plan).is_enabled()
    bf16 = plan_amp(cuda, "auto", bf16_supported=lambda: True)
    assert (bf16.dtype, bf16.use_scaler, bf16.channels_last) == (torch.bfloat16, False, True)
    fp16 = plan_amp(cuda, "auto", bf16_supported=lambda: False)
    assert (fp16.dtype, fp16.use_scaler, fp16.channels_last) == (torch.float16, True, True)
    assert plan_amp(cuda, "fp16", bf16_supported=lambda: True).dtype == torch.float16
    assert plan_amp(cuda, "bf16", bf16_supported=lambda: False).dtype == torch.bfloat16
    assert plan_amp(cuda, "fp32").dtype is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "CUDA is not available" on CI
        assert isinstance(autocast(bf16), torch.autocast)

    assert resolve_num_workers(None, cpu) == 0
    assert resolve_num_workers(None, cuda) >= 1
    assert resolve_num_workers(3, cuda) == 3
    assert loader_options(cpu, 0) == {"num_workers": 0, "pin_memory": False}
    assert loader_options(cuda, 4) == {
        "num_workers": 4,
        "pin_memory": True,
        "persistent_workers": True,
        "prefetch_factor": 4,
        "multiprocessing_context": "forkserver",
    }


def test_loss_weights_even_out_the_classes() -> None:
    labels = [0] * 10 + [1] * 30
    weights = class_loss_weights(labels)
    assert weights.tolist() == pytest.approx([2.0, 2.0 / 3.0])
    # Each class contributes the same total weight, and a balanced set weighs 1 per sample.
    assert 10 * weights[0].item() == pytest.approx(30 * weights[1].item())
    assert class_loss_weights([0, 1, 0, 1]).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="live and spoof"):
        class_loss_weights([1, 1])


def test_balanced_sampler_draws_both_classes_equally(tmp_path: Path) -> None:
    labels = [0] * 100 + [1] * 900
    assert sample_weights([0, 1, 1, 1]) == pytest.approx([2.0, 2 / 3, 2 / 3, 2 / 3])
    sampler = balanced_sampler(labels, torch.Generator().manual_seed(0))
    drawn = [labels[i] for i in sampler]
    assert len(drawn) == len(labels)
    assert 0.42 < drawn.count(0) / len(drawn) < 0.58  # ~0.5, not the data's 0.1

    items = _crops(tmp_path, 2, 10, "train")
    config = _config(tmp_path, balance="sampler", batch_size=12)
    generator = torch.Generator().manual_seed(1)
    loader = _loader(items, config, torch.device("cpu"), train=True, generator=generator)
    live = total = 0
    for _ in range(40):
        for _images, batch_labels in loader:
            live += int((batch_labels == 0).sum())
            total += len(batch_labels)
    assert 0.4 < live / total < 0.6  # the data hold 2 live in 12


def test_worker_processes_feed_the_same_batches_as_the_main_process(tmp_path: Path) -> None:
    """The loader path CUDA runs take (worker processes kept across epochs), on the CPU."""
    items = _crops(tmp_path, 3, 5, "train")
    cpu = torch.device("cpu")

    def epochs(num_workers: int) -> list[list[torch.Tensor]]:
        config = _config(tmp_path, num_workers=num_workers, batch_size=3)
        generator = torch.Generator()
        loader = _loader(items, config, cpu, train=True, generator=generator)
        assert loader.persistent_workers == (num_workers > 0)
        seen = []
        for epoch in (1, 2):
            generator.manual_seed(epoch)
            seen.append([images for images, _labels in loader])
        return seen

    inline, workers = epochs(0), epochs(2)
    for a, b in zip(inline, workers, strict=True):
        assert len(a) == len(b) == 2  # 8 crops, batches of 3, last partial batch dropped
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(inline[0][0], inline[1][0])  # epochs are shuffled differently
