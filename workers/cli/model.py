"""``faceauth model info``, and the model version the configured workers write.

``configured_model_version`` is the ``faceauth.model_version`` entry point: ``shared``'s
``model reembed`` and ``backfill --reembed`` ask it for their default target version
without importing workers.
"""

from __future__ import annotations

from shared.cli.output import console
from shared.config import get_settings


def configured_model_version() -> str:
    """The model version the configured workers write (loads the pack locally)."""
    from workers.inference.face_pack import FacePack

    settings = get_settings()
    pack = FacePack.load(settings.face_pack_dir, det_size=settings.face_det_size)
    return settings.face_pack_version or pack.model_version


def info() -> None:
    """Load the configured face pack and print its version and dimension."""
    from workers.inference.face_pack import FacePack

    settings = get_settings()
    pack = FacePack.load(settings.face_pack_dir, det_size=settings.face_det_size)
    console.print(f"pack dir:      {pack.pack_dir}")
    console.print(f"model name:    {pack.model_name}")
    console.print(f"model version: {settings.face_pack_version or pack.model_version}")
    console.print(f"embedding dim: {pack.embedding_dim}")
    console.print(f"providers:     {pack.providers}")
