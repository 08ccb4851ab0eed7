"""Per-process resources of a worker: settings, DB pool, image store and models.

Each is built on first use in the process that uses it (after Celery forks),
then reused for every task that process runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg_pool import ConnectionPool

from shared.config import Settings, get_settings
from shared.db.pool import get_pool
from shared.imaging import DecodedImage, decode_image
from shared.storage import ImageStore

if TYPE_CHECKING:
    from workers.inference.face_pack import FacePack
    from workers.inference.liveness import LivenessScorer

log = logging.getLogger(__name__)


class WorkerRuntime:
    def __init__(self, settings: Settings, *, record_metrics: bool = True) -> None:
        self.settings = settings
        # False for the main process's start check: its loads serve no job.
        self._record_metrics = record_metrics
        self._lock = threading.Lock()
        self._face_pack: FacePack | None = None
        self._previous_pack: FacePack | None = None
        self._previous_loaded = False
        self._liveness: LivenessScorer | None = None
        self._liveness_loaded = False
        self.model_load_seconds: dict[str, float] = {}

    @property
    def pool(self) -> ConnectionPool:
        return get_pool(self.settings)

    @cached_property
    def store(self) -> ImageStore:
        return ImageStore.from_settings(self.settings)

    def _load_pack(self, folder: Path, label: str | None, key: str) -> FacePack:
        from workers.inference.face_pack import FacePack

        started = time.perf_counter()
        pack = FacePack.load(
            folder, det_size=self.settings.face_det_size, providers=self.settings.ort_providers
        )
        if label:
            pack = pack.relabelled(label)
        if self.settings.batch_max_size > 1:
            pack.enable_batching(self._batcher)
        self.model_load_seconds[key] = time.perf_counter() - started
        from workers import metrics

        if self._record_metrics:
            metrics.observe_model_load(key, self.model_load_seconds[key])
        return pack

    def previous_face_pack(self) -> FacePack | None:
        """The pre-migration pack, loaded only when a migration is configured."""
        with self._lock:
            if not self._previous_loaded:
                folder = self.settings.previous_face_pack_dir
                if folder is not None:
                    self._previous_pack = self._load_pack(
                        folder, self.settings.previous_face_pack_version, "previous_face_pack"
                    )
                self._previous_loaded = True
            return self._previous_pack

    def face_packs(self) -> dict[str, FacePack]:
        """Every loaded pack by model version, the current one first."""
        packs = {self.face_pack().model_version: self.face_pack()}
        previous = self.previous_face_pack()
        if previous is not None:
            packs.setdefault(previous.model_version, previous)
        return packs

    def face_pack(self) -> FacePack:
        with self._lock:
            if self._face_pack is None:
                self._face_pack = self._load_pack(
                    self.settings.face_pack_dir, self.settings.face_pack_version, "face_pack"
                )
                log.info(
                    "face pack %s loaded in %.2fs (dim %d, providers %s)",
                    self._face_pack.model_version,
                    self.model_load_seconds["face_pack"],
                    self._face_pack.embedding_dim,
                    self._face_pack.providers,
                )
            return self._face_pack

    def liveness(self) -> LivenessScorer | None:
        """The deployed liveness model, or None when none is configured or it is switched off."""
        with self._lock:
            if not self._liveness_loaded:
                folder = self.settings.liveness_model_dir
                if folder is not None and self.settings.liveness_enabled:
                    from workers.inference.liveness import LivenessScorer

                    started = time.perf_counter()
                    self._liveness = LivenessScorer.load(folder)
                    if self.settings.batch_max_size > 1:
                        self._liveness.enable_batching(self._batcher)
                    self.model_load_seconds["liveness"] = time.perf_counter() - started
                    from workers import metrics

                    if self._record_metrics:
                        metrics.observe_model_load("liveness", self.model_load_seconds["liveness"])
                    log.info(
                        "liveness model %s %s loaded in %.2fs",
                        self._liveness.name,
                        self._liveness.version,
                        self.model_load_seconds["liveness"],
                    )
                self._liveness_loaded = True
            return self._liveness

    def _batcher(self, name: str, run: Any) -> Any:
        from workers.inference.batcher import batcher_for

        return batcher_for(name, run, self.settings)

    def load_models(self) -> dict[str, str]:
        """Load every configured model now; return their versions (for the ready file).

        Raises the model's own error (``ModelLoadError`` with a code and the folder)
        when a pack or the liveness model is missing or broken.
        """
        versions = {"face_pack": self.face_pack().model_version}
        previous = self.previous_face_pack()
        if previous is not None:
            versions["previous_face_pack"] = previous.model_version
        liveness = self.liveness()
        if liveness is not None:
            versions["liveness"] = f"{liveness.name} {liveness.version}"
        if self.settings.pose_source in ("auto", "face_mesh"):
            # The quality gate's face mesh (one per process); None: 5-point pose, logged.
            from workers.inference.face_mesh import get_face_mesh

            versions["face_mesh"] = "mediapipe" if get_face_mesh() else "unavailable"
        return versions

    def fetch_image(self, key: str) -> DecodedImage:
        data = self.store.get(key, max_bytes=self.settings.max_image_bytes)
        return decode_image(
            data,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
        )


_runtime: WorkerRuntime | None = None
_runtime_pid: int | None = None


def runtime() -> WorkerRuntime:
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        _runtime, _runtime_pid = WorkerRuntime(get_settings()), os.getpid()
    return _runtime


def on_process_start() -> None:
    """Called in every pool child right after fork: drop anything inherited from the parent."""
    global _runtime
    _runtime = None
