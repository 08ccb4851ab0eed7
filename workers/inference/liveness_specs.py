"""Built-in specs for third-party liveness models that ship without ``liveness.json``.

A folder whose ``.onnx`` files are exactly a built-in spec's member files is described
by that spec (see ``shared.liveness_spec.LivenessSpec.load``), so the read-only
MiniFASNet folder can be deployed as it is.
"""

from __future__ import annotations

from shared.liveness_spec import LivenessMember, LivenessSpec


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
