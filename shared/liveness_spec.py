"""The deployed liveness model contract: a folder of ONNX files described by ``liveness.json``.

The training job writes this description (and embeds it in the exported ONNX file's
``metadata_props``); the workers read it to know how to crop, normalise and combine
each member model. Keeping one pydantic model for both sides means a field added by
training cannot silently be ignored by serving: unknown fields are rejected.

Resolution order for a folder (``LivenessSpec.load``):

1. ``liveness.json`` beside the ONNX files;
2. else, when the folder holds exactly one ``.onnx`` file, the JSON under the
   ``faceauth_liveness`` key of that file's ``metadata_props``;
3. else a built-in spec whose member files are exactly the folder's ``.onnx`` files
   (third-party models that ship without a description, e.g. MiniFASNet; see
   ``BUILTIN_SPECS`` at the end of this module).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from shared.errors import ErrorCode, ModelLoadError

log = logging.getLogger(__name__)

LIVENESS_FORMAT: Final = "faceauth-liveness/1"
SPEC_FILENAME = "liveness.json"
ONNX_METADATA_KEY = "faceauth_liveness"

Channels = tuple[float, float, float]
Shift = tuple[float, float]

# A crop centre moved by more than one face box is no longer a crop of that face.
MAX_CROP_SHIFT = 1.0


class LivenessMember(BaseModel):
    """One ONNX model of the ensemble and how to feed it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(description="ONNX file name inside the model folder (no directories)")
    crop_scale: float = Field(gt=0, description="context crop: face box grown by this factor")
    square: bool = Field(default=False, description="make the face box square before scaling")
    crop_shift: Shift = Field(
        default=(0.0, 0.0),
        description="box centre moved by (dx, dy) box sides before scaling: maps the serving "
        "detector's box onto the box the model was trained on",
    )
    input_width: int = Field(gt=0)
    input_height: int = Field(gt=0)
    color_order: Literal["BGR", "RGB"]
    pixel_scale: float = Field(default=1.0, gt=0, description="multiplies the 0-255 pixel first")
    mean: Channels = (0.0, 0.0, 0.0)
    std: Channels = (1.0, 1.0, 1.0)
    live_class_index: int = Field(ge=0, description="softmax column of the live (real) class")

    @field_validator("file")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        # A member may only name a file inside the model folder; a path would let a
        # spec reach outside the deployed folder.
        if not value or Path(value).name != value or value in {".", ".."}:
            raise ValueError(f"member file must be a plain file name, got {value!r}")
        return value

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: Channels) -> Channels:
        if any(v <= 0 for v in value):
            raise ValueError(f"std values must be positive, got {value}")
        return value

    @field_validator("crop_shift")
    @classmethod
    def _small_finite_shift(cls, value: Shift) -> Shift:
        if not all(math.isfinite(v) and abs(v) <= MAX_CROP_SHIFT for v in value):
            raise ValueError(f"crop_shift values must be finite and within +-1, got {value}")
        return value

    @model_serializer(mode="wrap")
    def _omit_zero_shift(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A member without a shift serialises exactly as before the field existed, so such a
        # spec still loads in workers that predate it; a shifted one is refused there
        # (extra="forbid") rather than silently cropped in the wrong place.
        data = handler(self)
        if isinstance(data, dict) and self.crop_shift == (0.0, 0.0):
            data.pop("crop_shift", None)
        return data


class LivenessSpec(BaseModel):
    """The whole ``liveness.json`` document."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["faceauth-liveness/1"] = LIVENESS_FORMAT
    name: str = Field(min_length=1, description="model name stored with every score")
    version: str = Field(min_length=1, description="model version stored with every score")
    combine: Literal["mean"] = "mean"
    members: tuple[LivenessMember, ...] = Field(min_length=1)
    default_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)

    @field_validator("members")
    @classmethod
    def _unique_files(cls, value: tuple[LivenessMember, ...]) -> tuple[LivenessMember, ...]:
        files = [m.file for m in value]
        if len(set(files)) != len(files):
            raise ValueError(f"member files must be distinct, got {files}")
        return value

    # --- serialisation ------------------------------------------------------------------------

    def to_json(self) -> str:
        """Pretty JSON, the exact text written to ``liveness.json`` and the ONNX metadata."""
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str) -> LivenessSpec:
        """Parse and validate; ``source`` names where the text came from, for the error."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ModelLoadError(
                ErrorCode.LIVENESS_MODEL_INVALID,
                f"invalid liveness spec in {source}: {_brief(exc)}",
                source=source,
            ) from exc

    def member_files(self) -> set[str]:
        return {m.file for m in self.members}

    def with_member_file(self, file: str) -> LivenessSpec:
        """A copy of a one-member spec pointing at ``file`` (a renamed lone ONNX file)."""
        if len(self.members) != 1:
            raise ValueError("only a one-member spec can be re-pointed at another file")
        member = self.members[0].model_copy(update={"file": file})
        return self.model_copy(update={"members": (member,)})

    # --- loading ------------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: Path, *, builtins: Sequence[LivenessSpec] | None = None) -> LivenessSpec:
        """Describe the liveness model in ``folder`` (see the module docstring for the order).

        ``builtins`` defaults to the specs shipped with the workers. Raises
        ``ModelLoadError(LIVENESS_MODEL_INVALID)`` naming the folder when nothing fits or a
        member file is missing.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise _invalid(folder, "folder does not exist or is not a directory")
        onnx_files = sorted(p.name for p in folder.iterdir() if p.suffix == ".onnx" and p.is_file())

        spec_path = folder / SPEC_FILENAME
        if spec_path.is_file():
            spec = cls.from_json(spec_path.read_bytes(), source=str(spec_path))
        elif len(onnx_files) == 1:
            spec = _spec_from_onnx_metadata(folder / onnx_files[0], builtins)
        else:
            spec = _match_builtin(folder, onnx_files, builtins)

        missing = sorted(spec.member_files() - set(onnx_files))
        if missing:
            raise _invalid(
                folder,
                f"spec {spec.name!r} names member file(s) {missing} that are not in the folder "
                f"(found {onnx_files})",
            )
        return spec


def default_builtin_specs() -> tuple[LivenessSpec, ...]:
    """Specs for known third-party models that ship without ``liveness.json``."""
    return BUILTIN_SPECS


def _spec_from_onnx_metadata(
    onnx_path: Path, builtins: Sequence[LivenessSpec] | None
) -> LivenessSpec:
    import onnx  # only needed on this path; keeps importing the contract cheap

    folder = onnx_path.parent
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # onnx raises protobuf DecodeError and friends for garbage
        raise _invalid(folder, f"{onnx_path.name} is not a readable ONNX file ({exc})") from exc
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    text = metadata.get(ONNX_METADATA_KEY)
    if text is None:
        # A single file can still be a built-in model; only then is the folder hopeless.
        try:
            return _match_builtin(folder, [onnx_path.name], builtins)
        except ModelLoadError:
            raise _invalid(
                folder,
                f"no {SPEC_FILENAME} and {onnx_path.name} has no {ONNX_METADATA_KEY!r} "
                "metadata entry",
            ) from None
    spec = LivenessSpec.from_json(text, source=f"{onnx_path} metadata {ONNX_METADATA_KEY!r}")
    if spec.member_files() != {onnx_path.name}:
        if len(spec.members) != 1:
            raise _invalid(
                folder,
                f"metadata of {onnx_path.name} describes {len(spec.members)} members, but the "
                "folder holds only this file",
            )
        # The file was renamed after export; the metadata travels with the bytes, so the
        # lone file is the member it describes.
        spec = spec.with_member_file(onnx_path.name)
    return spec


def _match_builtin(
    folder: Path, onnx_files: Sequence[str], builtins: Sequence[LivenessSpec] | None
) -> LivenessSpec:
    candidates = default_builtin_specs() if builtins is None else tuple(builtins)
    present = set(onnx_files)
    for spec in candidates:
        if spec.member_files() == present:
            log.info("liveness model in %s matched built-in spec %s", folder, spec.name)
            return spec
    known = "; ".join(f"{s.name}: {sorted(s.member_files())}" for s in candidates) or "none"
    raise _invalid(
        folder,
        f"expected {SPEC_FILENAME}, a single ONNX file with {ONNX_METADATA_KEY!r} metadata, "
        f"or exactly the files of a built-in model ({known}); found ONNX files {list(onnx_files)}",
    )


def _invalid(folder: Path, why: str) -> ModelLoadError:
    return ModelLoadError(
        ErrorCode.LIVENESS_MODEL_INVALID,
        f"liveness model folder {folder}: {why}",
        folder=str(folder),
    )


def _brief(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )


# --- built-in specs ---------------------------------------------------------------------------
# A folder whose ``.onnx`` files are exactly a built-in spec's member files is described by
# that spec, so the read-only MiniFASNet folder can be deployed as it is. Plain data, kept
# beside the contract it instantiates.


def _minifasnet_member(file: str, crop_scale: float) -> LivenessMember:
    # Silent-Face-Anti-Spoofing feeds raw 0-255 BGR 80x80 crops, grows the face box per
    # side without squaring it, and reads class 1 as "real face".
    return LivenessMember(
        file=file,
        crop_scale=crop_scale,
        square=False,
        input_width=80,
        input_height=80,
        color_order="BGR",
        pixel_scale=1.0,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        live_class_index=1,
    )


MINIFASNET_V2_V1SE = LivenessSpec(
    name="minifasnet-v2+v1se",
    # The upstream release that published these weights (Silent-Face-Anti-Spoofing, 2020).
    version="2020.1",
    combine="mean",
    members=(
        _minifasnet_member("2.7_80x80_MiniFASNetV2.onnx", 2.7),
        _minifasnet_member("4_0_0_80x80_MiniFASNetV1SE.onnx", 4.0),
    ),
    default_threshold=0.5,
    training={
        "source": "minivision-ai/Silent-Face-Anti-Spoofing resources/anti_spoof_models",
        "licence": "Apache-2.0",
    },
)

BUILTIN_SPECS: tuple[LivenessSpec, ...] = (MINIFASNET_V2_V1SE,)
