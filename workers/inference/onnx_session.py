"""ONNX Runtime sessions for every model the workers run (faces and liveness).

One place decides the execution providers and session options, so a GPU worker and a
CPU worker differ only in configuration: ``FACEAUTH_ORT_PROVIDERS`` when set, otherwise
CUDA whenever this onnxruntime build offers it, else CPU.

``create_session(..., open_batch=True)`` also lets a model exported with a fixed batch of
1 (MiniFASNet is one) take whole batches: the batch dimension is opened in memory and
the result is checked against one-by-one runs before it is trusted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from shared.config import get_settings
from shared.errors import ErrorCode, ModelLoadError

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

# Largest batch handed to one session.run; bounds activation memory on long batches.
DEFAULT_MAX_BATCH = 64
# Batched and one-by-one outputs of a patched model must agree this closely (logits).
_PROBE_RTOL = 1e-4
_PROBE_ATOL = 1e-4
_PROBE_BATCH = 3

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class OrtSession:
    """A loaded model: the session, the providers it really got, and its batch capability."""

    session: ort.InferenceSession
    providers: list[str]
    input_name: str
    # None: any batch size is accepted; an int: the model only runs batches of exactly this.
    fixed_batch: int | None
    # True when the batch dimension was opened in memory (see module docstring).
    batch_opened: bool = False

    def run(self, batch: FloatArray, *, max_batch: int = DEFAULT_MAX_BATCH) -> FloatArray:
        """First output for ``batch`` (N, ...), in as few ``session.run`` calls as allowed."""
        if batch.shape[0] == 0:
            raise ValueError("empty batch")
        step = self.fixed_batch or max_batch
        if self.fixed_batch not in (None, 1) and batch.shape[0] % self.fixed_batch:
            raise ValueError(
                f"model only accepts batches of {self.fixed_batch}, got {batch.shape[0]}"
            )
        outputs = [
            np.asarray(self.session.run(None, {self.input_name: batch[i : i + step]})[0])
            for i in range(0, batch.shape[0], step)
        ]
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=0)


def resolve_providers(requested: Sequence[str] | None = None) -> list[str]:
    """Providers to ask for: ``requested``, else settings, else CUDA-if-available + CPU.

    An explicit request naming a provider this onnxruntime build lacks is an error rather
    than a silent CPU fallback: a GPU worker quietly running on CPU is a capacity outage.
    """
    if requested is None:
        requested = get_settings().ort_providers
    available = ort.get_available_providers()
    if not requested:
        return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]
    missing = [p for p in requested if p not in available]
    if missing:
        raise ModelLoadError(
            ErrorCode.ONNX_PROVIDER_UNAVAILABLE,
            f"ONNX Runtime provider(s) {missing} are not available in this build "
            f"(available: {available})",
            requested=list(requested),
            available=list(available),
        )
    return list(requested)


def session_options(intra_op_threads: int | None = None) -> ort.SessionOptions:
    """Options shared by every session.

    ``intra_op_threads`` (default ``FACEAUTH_ORT_INTRA_OP_THREADS``; 0 = ORT's own choice)
    matters on CPU workers: each Celery child process gets its own sessions, and with
    several children each using every core the pool thrashes.
    """
    if intra_op_threads is None:
        intra_op_threads = get_settings().ort_intra_op_threads
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = intra_op_threads
    # Our graphs are single chains; extra inter-op threads would only idle.
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: ORT's info/warning lines flood worker logs
    return opts


def create_session(
    model: Path | bytes,
    *,
    providers: Sequence[str] | None = None,
    intra_op_threads: int | None = None,
    error_code: ErrorCode = ErrorCode.MODEL_PACK_INVALID,
    open_batch: bool = False,
    label: str | None = None,
) -> OrtSession:
    """Load ``model`` (a path or serialized bytes) and report the providers actually used.

    ``error_code`` is the code of the ``ModelLoadError`` raised for an unreadable model
    (the face pack and the liveness model have their own). ``label`` names the model in
    errors and logs when ``model`` is bytes.
    """
    name = label or (str(model) if isinstance(model, Path) else "<in-memory model>")
    wanted = resolve_providers(providers)
    loaded = _load(model, wanted, intra_op_threads, error_code, name)
    if open_batch and loaded.fixed_batch == 1 and isinstance(model, Path):
        opened = _try_open_batch(model, loaded, wanted, intra_op_threads, error_code, name)
        if opened is not None:
            loaded = opened
    explicit = providers is not None or bool(get_settings().ort_providers)
    dropped = [p for p in wanted if p not in loaded.providers]
    if dropped:
        # ORT falls back to CPU when e.g. the CUDA libraries cannot be loaded.
        if explicit:
            raise ModelLoadError(
                ErrorCode.ONNX_PROVIDER_UNAVAILABLE,
                f"{name}: requested providers {dropped} could not be initialised "
                f"(session got {loaded.providers})",
                requested=wanted,
                used=loaded.providers,
            )
        log.warning("%s: providers %s unavailable, running on %s", name, dropped, loaded.providers)
    return loaded


def _load(
    model: Path | bytes,
    providers: list[str],
    intra_op_threads: int | None,
    error_code: ErrorCode,
    name: str,
) -> OrtSession:
    source: str | bytes = str(model) if isinstance(model, Path) else model
    try:
        session = ort.InferenceSession(
            source, sess_options=session_options(intra_op_threads), providers=providers
        )
    except Exception as exc:  # ORT raises its own pybind exception types (InvalidProtobuf, ...)
        raise ModelLoadError(error_code, f"cannot load ONNX model {name}: {exc}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelLoadError(
            error_code, f"{name}: expected one input tensor, found {[i.name for i in inputs]}"
        )
    dim0 = inputs[0].shape[0] if inputs[0].shape else None
    return OrtSession(
        session=session,
        providers=list(session.get_providers()),
        input_name=inputs[0].name,
        fixed_batch=dim0 if isinstance(dim0, int) and dim0 > 0 else None,
    )


def _try_open_batch(
    path: Path,
    fixed: OrtSession,
    providers: list[str],
    intra_op_threads: int | None,
    error_code: ErrorCode,
    name: str,
) -> OrtSession | None:
    """A session of ``path`` with an open batch dimension, or None (keep one-by-one runs)."""
    shape = fixed.session.get_inputs()[0].shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    try:
        patched = _open_batch_dimension(path)
        opened = _load(patched, providers, intra_op_threads, error_code, name)
        rng = np.random.default_rng(0)
        probe: FloatArray = rng.uniform(0.0, 1.0, (_PROBE_BATCH, *shape)).astype(np.float32)
        batched = opened.run(probe)
        single = np.concatenate([fixed.run(probe[i : i + 1]) for i in range(_PROBE_BATCH)])
        if batched.shape != single.shape or not np.allclose(
            batched, single, rtol=_PROBE_RTOL, atol=_PROBE_ATOL
        ):
            raise ValueError("batched outputs differ from one-by-one outputs")
    except Exception as exc:  # any failure here only costs speed, never correctness
        log.warning("%s: batch dimension cannot be opened (%s); scoring one by one", name, exc)
        return None
    log.info("%s: opened fixed batch dimension for batched inference", name)
    return OrtSession(
        session=opened.session,
        providers=opened.providers,
        input_name=opened.input_name,
        fixed_batch=None,
        batch_opened=True,
    )


def _open_batch_dimension(path: Path) -> bytes:
    """Serialized copy of the model with batch dim ``N`` and Reshape targets ``[1, ...]`` → 0.

    PyTorch exports of ``x.view(1, -1)``-style flattens bake the batch of the example input
    into a constant Reshape shape (see ``onnx_batch``). The caller verifies the result
    numerically.
    """
    import onnx

    from workers.inference.onnx_batch import open_batch

    opened, _ = open_batch(onnx.load(str(path), load_external_data=False))
    return bytes(opened.SerializeToString())
