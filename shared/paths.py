"""Where the provided models and sample photos live (``../shared`` beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def assets_dir() -> Path:
    """The read-only assets folder: ``$FACEAUTH_SHARED_DIR`` or ``<repo>/../shared``."""
    env = os.environ.get("FACEAUTH_SHARED_DIR")
    return Path(env).resolve() if env else (REPO_ROOT.parent / "shared").resolve()


def sample_face_pack_dir() -> Path:
    return assets_dir() / "models" / "facepack-test"


def minifasnet_dir() -> Path:
    return assets_dir() / "models" / "liveness" / "minifasnet"


def faces_dir() -> Path:
    return assets_dir() / "faces"
