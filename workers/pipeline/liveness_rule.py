"""The decision rule of a liveness session's submission: a pure function of its frames.

A submission of N frames (1..FACEAUTH_LIVENESS_SESSION_MAX_FRAMES) is decided in order:

1. **quality_failed** unless every frame holds exactly one face that passes the quality
   gate (a suspected spoof aside: that is step 3's question, asked of all frames together);
2. **faces_differ** unless every frame shows the same face: the cosine similarity of each
   frame's embedding to the *medoid* frame (the one most similar to all the others; with
   two frames, the first) is at least the same-person threshold, the active T_low of the
   face model version (below T_low verification rejects: "not the same person");
3. **spoof** when the *upper median* of the frames' spoof scores is above the liveness
   threshold (the session's channel's, see shared/db/liveness_calibrations.py), else
   **live**. The median lets one odd frame (motion blur, a glare) not decide alone; the
   upper median (with an even count, the higher of the two middle scores) sends a tie
   between live-looking and spoof-looking frames to spoof.

A live submission records its probe: the best-quality frame (highest detector score,
then the sharpest), the face a verification naming the session is then matched with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from shared.errors import ErrorCode
from shared.quality_codes import QualityReasonCode


class SessionDecision(StrEnum):
    LIVE = "live"
    SPOOF = "spoof"
    FACES_DIFFER = "faces_differ"
    QUALITY_FAILED = "quality_failed"

    @property
    def about_the_person(self) -> bool:
        """A failed decision about who is in front of the camera (counts toward a cool-down);
        quality_failed is about the photo."""
        return self in (SessionDecision.SPOOF, SessionDecision.FACES_DIFFER)


REASON_OF: dict[SessionDecision, str] = {
    SessionDecision.SPOOF: str(QualityReasonCode.SPOOF_SUSPECTED),
    SessionDecision.FACES_DIFFER: str(ErrorCode.SESSION_FACES_DIFFER),
    SessionDecision.QUALITY_FAILED: str(ErrorCode.QUALITY_REJECTED),
}


@dataclass(frozen=True)
class Frame:
    """What the rule needs of one frame."""

    image_key: str
    usable: bool  # exactly one face, every quality check passed
    spoof_score: float | None
    det_score: float = 0.0
    sharpness: float = 0.0
    embedding: npt.NDArray[np.float32] | None = None  # L2-normalised; None when unusable


@dataclass(frozen=True)
class Verdict:
    decision: SessionDecision
    spoof_score: float | None  # the upper median; None when not reached
    similarities: list[float] | None  # each frame's cosine to the medoid
    medoid: int | None
    probe: int | None  # index of the probe frame of a live submission

    @property
    def passed(self) -> bool:
        return self.decision is SessionDecision.LIVE

    @property
    def reasons(self) -> list[str]:
        reason = REASON_OF.get(self.decision)
        return [reason] if reason else []


def upper_median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def medoid_index(embeddings: npt.NDArray[np.float32]) -> int:
    """The frame with the highest summed similarity to the others (the first of two)."""
    if len(embeddings) <= 2:
        return 0
    sims = embeddings @ embeddings.T
    np.fill_diagonal(sims, 0.0)
    return int(np.argmax(sims.sum(axis=1)))


def decide_session(
    frames: Sequence[Frame], *, same_person_min: float, spoof_threshold: float
) -> Verdict:
    if not frames:
        raise ValueError("a submission has at least one frame")
    if not all(f.usable and f.embedding is not None for f in frames):
        return Verdict(SessionDecision.QUALITY_FAILED, None, None, None, None)
    embeddings = np.stack([f.embedding for f in frames if f.embedding is not None])
    medoid = medoid_index(embeddings)
    similarities = [float(s) for s in embeddings @ embeddings[medoid]]
    if min(similarities) < same_person_min:
        return Verdict(SessionDecision.FACES_DIFFER, None, similarities, medoid, None)
    scores = [f.spoof_score for f in frames]
    if any(s is None for s in scores):
        raise ValueError("every usable frame needs a spoof score")
    spoof = upper_median([float(s) for s in scores if s is not None])
    if spoof > spoof_threshold:  # the same comparison as a single probe's (probe.py)
        return Verdict(SessionDecision.SPOOF, spoof, similarities, medoid, None)
    probe = max(range(len(frames)), key=lambda i: (frames[i].det_score, frames[i].sharpness))
    return Verdict(SessionDecision.LIVE, spoof, similarities, medoid, probe)
