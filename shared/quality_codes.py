"""Stable codes for why a photo is unusable for enrollment or verification.

Clients branch on these strings (show "move closer", "too dark", ...), so they live
in ``shared`` with no model dependencies, and a code, once published, never changes
meaning. The gate that produces them is ``workers.inference.quality``; the liveness
stage (``workers.pipeline.probe``) adds ``spoof_suspected``.
"""

from __future__ import annotations

from enum import StrEnum


class QualityReasonCode(StrEnum):
    # face count
    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    # per-face measurements
    LOW_DETECTION_SCORE = "low_detection_score"
    FACE_TOO_SMALL = "face_too_small"
    TOO_BLURRY = "too_blurry"
    TOO_DARK = "too_dark"
    TOO_BRIGHT = "too_bright"
    FACE_AREA_TOO_SMALL = "face_area_too_small"
    YAW_OUT_OF_RANGE = "yaw_out_of_range"
    PITCH_OUT_OF_RANGE = "pitch_out_of_range"
    FACE_TRUNCATED = "face_truncated"
    EYES_CLOSED = "eyes_closed"
    FACE_OCCLUDED = "face_occluded"
    MASK = "mask"
    SUNGLASSES = "sunglasses"
    # liveness, scored on the faces that passed the gate
    SPOOF_SUSPECTED = "spoof_suspected"
