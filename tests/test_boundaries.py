"""Architecture rules that are easy to break by accident."""

from __future__ import annotations

import subprocess
import sys

from shared.paths import REPO_ROOT

WORKER_MODULES = [
    "workers.celery_app",
    "workers.tasks",
    "workers.pipeline.enrollment",
    "workers.pipeline.verification",
    "workers.pipeline.identification",
    "workers.inference.face_pack",
    "workers.inference.quality",
    "workers.inference.liveness",
]


def _imported_after(modules: list[str], code: str = "") -> set[str]:
    script = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + code
        + "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def test_workers_never_import_torch() -> None:
    loaded = _imported_after(
        WORKER_MODULES,
        # Load the models too: importing is not enough to prove it.
        "from shared.paths import sample_face_pack_dir, minifasnet_dir\n"
        "from workers.inference.face_pack import FacePack\n"
        "from workers.inference.liveness import LivenessScorer\n"
        "FacePack.load(sample_face_pack_dir()); LivenessScorer.load(minifasnet_dir())\n",
    )
    assert not {m for m in loaded if m == "torch" or m.startswith(("torch.", "timm", "mediapipe"))}


def test_producer_side_needs_no_models() -> None:
    """Services that only submit jobs import the client without any model runtime."""
    loaded = _imported_after(["shared.producer", "shared.schemas", "shared.storage"])
    heavy = {"onnxruntime", "insightface", "torch", "timm", "mediapipe"}
    assert not heavy & {m.split(".")[0] for m in loaded}
